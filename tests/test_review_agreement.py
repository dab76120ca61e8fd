"""Agreement figures against values computed by hand (and Krippendorff's published example)."""

import pytest

from validation.agreement import cohen_kappa, krippendorff_alpha, pairwise_kappa

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, missing values as None. Published: nominal 0.743, ordinal 0.815, interval 0.849.
A = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
B = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
C = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
D = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
UNITS = list(zip(A, B, C, D, strict=True))


@pytest.mark.parametrize(
    ("metric", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)]
)
def test_alpha_matches_krippendorff_2011(metric, expected):
    est = krippendorff_alpha(UNITS, metric, bootstrap=500, seed=1)
    assert est.value == pytest.approx(expected, abs=5e-4)
    assert est.n == 11  # unit 12 has one value: not pairable
    assert est.low <= est.value <= est.high


def test_alpha_small_table_by_hand():
    # Two coders, four units: (a,a) (a,b) (b,b) (b,b). Coincidences: o_aa=2, o_ab=o_ba=1,
    # o_bb=4; n_a=3, n_b=5, n=8. Do = 2/8; De = 2*3*5/(8*7) = 30/56. alpha = 1 - (2/8)/(30/56)
    # = 1 - 56/120 = 0.5333.
    units = [("a", "a"), ("a", "b"), ("b", "b"), ("b", "b")]
    assert krippendorff_alpha(units, "nominal", bootstrap=0).value == pytest.approx(1 - 56 / 120)


def test_alpha_ordinal_by_hand():
    # Ratings 1..3, two coders: (1,1) (1,2) (3,3). n_1=3, n_2=1, n_3=2, n=6.
    # Ordinal distances: d(1,2) = (n1+n2 - (n1+n2)/2)^2 = 2^2 = 4; d(1,3) = (3+1+2-(3+2)/2)^2 =
    # 3.5^2 = 12.25; d(2,3) = (1+2-(1+2)/2)^2 = 1.5^2 = 2.25.
    # Do = 2*4/6 = 4/3. De = 2*(3*1*4 + 3*2*12.25 + 1*2*2.25)/(6*5) = 2*90/30 = 6.
    # alpha = 1 - (4/3)/6 = 0.7778.
    units = [(1, 1), (1, 2), (3, 3)]
    assert krippendorff_alpha(units, "ordinal", bootstrap=0).value == pytest.approx(1 - 4 / 18)


def test_alpha_undefined_without_variation_or_pairs():
    assert krippendorff_alpha([(1, 1), (1, 1)], "nominal").value is None
    assert krippendorff_alpha([(1, None), (None, 2)], "nominal").value is None


def test_alpha_interval_is_seeded():
    a = krippendorff_alpha(UNITS, "ordinal", bootstrap=300, seed=7)
    b = krippendorff_alpha(UNITS, "ordinal", bootstrap=300, seed=7)
    assert (a.low, a.high) == (b.low, b.high)


def test_cohen_kappa_by_hand():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15. po = 35/50 = 0.7;
    # pe = (25/50)(30/50) + (25/50)(20/50) = 0.5; kappa = 0.4;
    # se = sqrt(0.7*0.3 / (50 * 0.25)) = 0.12961; CI = 0.4 +- 1.96*se = [0.1460, 0.6540].
    a = ["y"] * 25 + ["n"] * 25
    b = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    est = cohen_kappa(a, b)
    assert est.value == pytest.approx(0.4)
    assert est.low == pytest.approx(0.14596, abs=1e-4)
    assert est.high == pytest.approx(0.65404, abs=1e-4)


def test_pairwise_kappa_uses_shared_items_only():
    ratings = {
        "ann": {1: 1, 2: 2, 3: 3, 4: 1},
        "bob": {1: 1, 2: 2, 3: 3, 9: 5},
        "cat": {7: 1},
    }
    out = pairwise_kappa(ratings)
    assert set(out) == {("ann", "bob")}
    assert out[("ann", "bob")].value == pytest.approx(1.0)
    assert out[("ann", "bob")].n == 3
    with pytest.raises(ValueError, match="same items"):
        cohen_kappa([1, 2], [1])
