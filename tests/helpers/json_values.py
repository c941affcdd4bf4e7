"""Hypothesis strategies for JSON values as producers send them: every kind of scalar,
integers around both ends of the 64-bit range, nested lists and objects."""

from __future__ import annotations

from hypothesis import strategies as st

scalars = (
    st.none()
    | st.booleans()
    # Around both ends of the 64-bit range the encoders keep exact.
    | st.integers(min_value=-(2**64), max_value=2**65)
    | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
)
values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)
