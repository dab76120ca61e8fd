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


def test_alpha_interval_by_hand():
    # Two coders, units (1,2) (2,2) (3,5); interval delta^2 = (c - k)^2.
    # Coincidences: o_12 = o_21 = 1, o_22 = 2, o_35 = o_53 = 1; n_1=1, n_2=3, n_3=1, n_5=1, n=6.
    # Do = (o_12 + o_21) * 1 + (o_35 + o_53) * 4 = 2 + 8 = 10, / n = 10/6.
    # De = sum_{c != k} n_c n_k (c-k)^2 / (n (n-1)); unordered pairs, each counted twice:
    #   (1,2) 1*3*1 = 3, (1,3) 1*1*4 = 4, (1,5) 1*1*16 = 16, (2,3) 3*1*1 = 3, (2,5) 3*1*9 = 27,
    #   (3,5) 1*1*4 = 4; sum 57, twice 114, / 30 = 3.8.
    # alpha = 1 - (10/6) / 3.8 = 1 - 100/228 = 32/57 = 0.5614.
    units = [(1, 2), (2, 2), (3, 5)]
    est = krippendorff_alpha(units, "interval", bootstrap=0)
    assert est.value == pytest.approx(32 / 57)
    assert est.n == 3


def test_alpha_three_coders_on_a_unit_by_hand():
    # Unit 1 has three values (a, a, b): ordered pairs of different coders a-a: 2, a-b: 2,
    # b-a: 2, each weighted 1/(m - 1) = 1/2 -> o_aa = 1, o_ab = o_ba = 1. Unit 2 (b, b): o_bb = 2.
    # n_a = 2, n_b = 3, n = 5. Do = (o_ab + o_ba)/n = 2/5; De = 2 n_a n_b / (n (n-1)) = 12/20.
    # alpha = 1 - (2/5)/(12/20) = 1/3.
    units = [("a", "a", "b"), {"x": "b", "y": "b", "z": None}]
    assert krippendorff_alpha(units, "nominal", bootstrap=0).value == pytest.approx(1 / 3)


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


# Two raters whose marginals differ (A mostly 1, B mostly 3). Items 0-9, rows A, columns B:
#
#            B=1  B=2  B=3 | A's
#     A=1     2    1    2  |  5
#     A=2     0    2    2  |  4
#     A=3     0    0    1  |  1
#     B's     2    3    5  | 10
#
# po = (2 + 2 + 1)/10 = 0.5
# pe = sum_c pA(c) pB(c) = (5*2 + 4*3 + 1*5)/100 = 27/100 = 0.27
#   (A's marginals twice would give (25+16+1)/100 = 0.42; B's twice (4+9+25)/100 = 0.38)
# kappa = (0.5 - 0.27)/(1 - 0.27) = 0.23/0.73 = 0.315068
# se = sqrt(po (1-po) / (n (1-pe)^2)) = sqrt(0.25 / (10 * 0.5329)) = sqrt(0.046913) = 0.216594
# 95 % CI = 0.315068 -+ 1.96 * 0.216594 = [-0.109456, 0.739593]
ASYM_A = [1, 1, 1, 1, 1, 2, 2, 2, 2, 3]
ASYM_B = [1, 1, 2, 3, 3, 2, 2, 3, 3, 3]


def test_cohen_kappa_with_asymmetric_marginals_by_hand():
    assert sorted(ASYM_A) != sorted(ASYM_B)  # the marginals differ
    for a, b in ((ASYM_A, ASYM_B), (ASYM_B, ASYM_A)):  # kappa is symmetric in the raters
        est = cohen_kappa(a, b)
        assert est.value == pytest.approx(0.23 / 0.73)
        assert est.low == pytest.approx(-0.109456, abs=1e-5)
        assert est.high == pytest.approx(0.739593, abs=1e-5)
        assert est.n == 10


def test_pairwise_kappa_with_asymmetric_marginals_by_hand():
    # The same table through pairwise_kappa, with items only one rater answered (left out).
    ratings = {
        "bob": {f"i{k}": v for k, v in enumerate(ASYM_B)} | {"only-bob": 1},
        "ann": {f"i{k}": v for k, v in enumerate(ASYM_A)} | {"only-ann-1": 3, "only-ann-2": 3},
    }
    out = pairwise_kappa(ratings)
    assert set(out) == {("ann", "bob")}
    assert out[("ann", "bob")].value == pytest.approx(0.23 / 0.73)
    assert out[("ann", "bob")].n == 10


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
