from steering.layer_band import band_of, band_spec


def test_a_band_of_consecutive_layers_has_a_slider_form():
    assert band_of("12-16", 30) == (12, 5)
    assert band_of("7", 30) == (7, 1)
    assert band_of("-3--1", 30) == (27, 3)  # from the end


def test_other_specs_have_none():
    assert band_of("3,5,9", 30) is None  # not consecutive
    assert band_of("", 30) is None
    assert band_of("40", 30) is None  # out of range: the text box shows the problem when sent
    assert band_of("nonsense", 30) is None


def test_the_spec_of_a_band_is_cut_at_the_last_layer():
    assert band_spec(12, 5, 29) == "12-16"
    assert band_spec(20, 5, 22) == "20-22"
    assert band_spec(4.0, 1.0, 29) == "4"
    assert band_spec(4, 0, 29) == "4"  # at least one layer
    for first, width in ((0, 3), (10, 13)):
        assert band_of(band_spec(first, width, 29), 30) == (first, width)
