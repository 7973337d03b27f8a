"""The genre tree's rule: the finest genre that is certain, its parent, or nothing (with why)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from libtagger.analysis.model import model_path, read_sidecar
from libtagger.analysis.tree import Decision, GenreTree, NetworkVotes
from libtagger.config import Config, TagConfig

NETWORKS = {"musicnn": ["msd_vgg", "mtt_vgg"], "efficientat": ["mn04_as"]}


@pytest.fixture(scope="module")
def tree() -> GenreTree:
    """The default tree on the shipped models' real label lists."""
    labels = [[read_sidecar(model_path(m)).labels for m in models] for models in NETWORKS.values()]
    return GenreTree(Config().genres, labels)


def votes(tree: GenreTree, network: str, windows: list[dict[str, float]]) -> NetworkVotes:
    """Window scores as a network would give them: named nodes high, the rest low; nodes the
    network cannot name stay NaN (the tree's own mapping decides which)."""
    index = list(NETWORKS).index(network)
    known = ~np.isnan(tree.window_scores(index, _probs(tree, index)))[0]
    rows = []
    for window in windows:
        row = np.where(known, 0.02, np.nan)
        for name, score in window.items():
            i = tree.names.index(name)
            assert known[i], f"{network} cannot name {name}"
            row[i] = score
        for style in tree.styles:  # a broad genre counts its styles, as window_scores does
            parent = tree.parent[style]
            row[parent] = np.fmax(row[parent], row[style])
        rows.append(row)
    return NetworkVotes(network, np.array(rows))


def _probs(tree: GenreTree, index: int) -> list[np.ndarray]:
    models = list(NETWORKS.values())[index]
    return [np.zeros((1, len(read_sidecar(model_path(m)).labels))) for m in models]


TAGS = TagConfig()


def test_agreeing_networks_write_the_broad_genre(tree):
    rock = [{"Rock": 0.6}] * 4
    decision = tree.decide([votes(tree, "musicnn", rock), votes(tree, "efficientat", rock)], TAGS)
    assert decision.genres == ("Rock",) and decision.level == "genre"
    assert decision.confidence == 1.0 and "the networks agree" in decision.reason


def test_disagreeing_networks_write_nothing_and_say_why(tree):
    decision = tree.decide([votes(tree, "musicnn", [{"Hip-Hop": 0.5}] * 4),
                            votes(tree, "efficientat", [{"Electronic": 0.5}] * 4)], TAGS)
    assert decision.genres == ()
    assert decision.reason.startswith("networks disagree: ")
    assert "Hip-Hop (musicnn)" in decision.reason and "Electronic (efficientat)" in decision.reason
    assert decision.networks == {"musicnn": "Hip-Hop", "efficientat": "Electronic"}


def test_a_certain_style_is_written_an_unclear_one_backs_off_to_its_parent(tree):
    house = [{"House": 0.5}] * 4
    certain = tree.decide([votes(tree, "musicnn", house), votes(tree, "efficientat", house)],
                          TAGS)
    assert certain.genres == ("House",) and certain.level == "style"
    mixed = [{"House": 0.5}, {"Techno": 0.5}, {"House": 0.5}, {"Techno": 0.5}]
    unclear = tree.decide([votes(tree, "musicnn", mixed), votes(tree, "efficientat", mixed)],
                          TAGS)
    assert unclear.genres == ("Electronic",) and unclear.level == "genre"
    assert "so the broad genre is written" in unclear.reason
    both = dataclasses.replace(TAGS, max_genres=2)
    assert tree.decide([votes(tree, "musicnn", house), votes(tree, "efficientat", house)],
                       both).genres == ("House", "Electronic")
    broad_only = dataclasses.replace(TAGS, level="genre")
    assert tree.decide([votes(tree, "musicnn", house), votes(tree, "efficientat", house)],
                       broad_only).genres == ("Electronic",)


def test_a_genre_only_one_network_can_name_needs_the_stricter_gate(tree):
    # musicnn has no reggae tag: EfficientAT alone decides, with style_confidence (0.66).
    pop = votes(tree, "musicnn", [{"Pop": 0.4}] * 4)
    strong = votes(tree, "efficientat", [{"Reggae": 0.6}] * 3 + [{"Pop": 0.3}])
    decision = tree.decide([pop, strong], TAGS)
    assert decision.genres == ("Reggae",) and decision.confidence == 0.75
    weak = votes(tree, "efficientat", [{"Reggae": 0.6}] * 3 + [{"Pop": 0.5}] * 2)
    decision = tree.decide([pop, weak], TAGS)
    assert decision.genres == ()  # 60 % is enough for two networks, not for one
    assert "only one network can name it" in decision.reason and "needs 66%" in decision.reason


def test_too_few_votes_or_silence_write_nothing(tree):
    split = [{"Rock": 0.5}, {"Pop": 0.4}, {"Jazz": 0.3}, {"Rock": 0.45}]
    decision = tree.decide([votes(tree, "musicnn", split),
                            votes(tree, "efficientat", [{"Rock": 0.9}, {"Pop": 0.4}, {"Pop": 0.4},
                                                        {"Jazz": 0.3}])], TAGS)
    # Both rank Rock first, but only (50 % + 25 %) / 2 of the votes are for it.
    assert decision.genres == () and decision.reason.startswith("below the gate: 38% ")
    silent = NetworkVotes("musicnn", np.zeros((0, len(tree.names))))
    assert tree.decide([silent], TAGS) == Decision(reason="silent: no window loud enough to vote")


def test_decisions_round_trip_through_their_stored_form(tree):
    rock = [{"Rock": 0.6}] * 4
    decision = tree.decide([votes(tree, "musicnn", rock), votes(tree, "efficientat", rock)], TAGS)
    assert Decision.from_dict(decision.to_dict()) == dataclasses.replace(
        decision, confidence=round(decision.confidence, 4))
    assert Decision.from_dict(None) is None


def test_every_default_node_is_named_by_some_network(tree):
    assert tree.unmapped() == []
