"""The online store's key layout: on random valid names, no two different keys of any kind
(feature hash, namespace progress, version map) are the same Redis key, and the prefix a purge
of one view's namespace deletes holds that namespace's feature hashes and nothing else."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from core.domain.definitions import NAME_PATTERN
from core.domain.layout import feature_key, meta_key, namespace_of, versions_key

# Names that spelled another kind's key segment in the first layout, and random ones.
view_names = st.one_of(st.sampled_from(["meta", "versions", "v1", "v2", "fp", "a"]),
                       st.from_regex(NAME_PATTERN, fullmatch=True))
namespaces = st.integers(min_value=1, max_value=10_000).map(namespace_of)
entity_keys = st.one_of(st.sampled_from(["", "u1", "v1", "v2", "a:b", "*"]), st.text())

FEATURE, META, VERSIONS = "feature", "meta", "versions"
StoredKey = tuple[str, str, str, str]
"""(kind, view, namespace, entity key), "" where the kind has no such part."""

stored_keys = st.one_of(
    st.tuples(st.just(FEATURE), view_names, namespaces, entity_keys),
    st.tuples(st.just(META), view_names, namespaces, st.just("")),
    st.tuples(st.just(VERSIONS), view_names, st.just(""), st.just("")),
)


def redis_key(stored: StoredKey) -> str:
    kind, view, namespace, entity_key = stored
    if kind == FEATURE:
        return feature_key(view, namespace, entity_key)
    if kind == META:
        return meta_key(view, namespace)
    return versions_key(view)


@given(stored_keys, stored_keys)
@example((FEATURE, "meta", "v1", "v2"), (META, "v1", "v2", ""))
@example((FEATURE, "versions", "v1", ""), (VERSIONS, "v1", "", ""))
def test_different_keys_never_share_a_redis_key(one: StoredKey, other: StoredKey) -> None:
    if one != other:
        assert redis_key(one) != redis_key(other)


@given(view_names, namespaces, stored_keys)
@example("meta", "v1", (META, "v1", "v2", ""))
@example("versions", "v1", (VERSIONS, "v1", "", ""))
def test_a_purge_prefix_holds_its_own_feature_hashes_only(
        view: str, namespace: str, stored: StoredKey) -> None:
    kind, stored_view, stored_namespace, _ = stored
    own = (kind, stored_view, stored_namespace) == (FEATURE, view, namespace)
    assert redis_key(stored).startswith(feature_key(view, namespace, "")) == own
