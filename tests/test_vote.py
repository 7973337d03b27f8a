"""Window probabilities become track genres by the documented rule."""

from __future__ import annotations

import numpy as np
import pytest

from libtagger.analysis.vote import Vocabulary, normalise_genre, vote


@pytest.mark.parametrize(
    ("a", "b"),
    [("Hip-Hop", "hiphop"), ("R&B", "rnb"), ("Drum & Bass", "drum n bass"), ("Pop ", "POP"),
     ("Easy_Listening", "easy listening")],
)
def test_normalise_genre_ignores_case_and_punctuation(a, b):
    assert normalise_genre(a) == normalise_genre(b)


def test_distinct_genres_stay_distinct():
    assert normalise_genre("Rock") != normalise_genre("Pop")


def test_genre_takes_best_tag_and_tags_match_case_insensitively():
    vocab = Vocabulary({"Rock": ["rock", "Hard Rock"], "Jazz": ["jazz"]}, [["rock", "hard rock", "jazz"]])
    scores = vocab.window_scores([np.array([[0.2, 0.7, 0.1], [0.5, 0.1, 0.3]])])
    np.testing.assert_allclose(scores, [[0.7, 0.1], [0.5, 0.3]])


def test_models_are_averaged_only_where_they_know_the_genre():
    table = {"Rock": ["rock"], "Classical": ["classical"], "Polka": ["polka"]}
    vocab = Vocabulary(table, [["rock"], ["rock", "classical"]])
    scores = vocab.window_scores([np.array([[0.2]]), np.array([[0.6, 0.9]])])
    assert scores[0, 0] == pytest.approx(0.4)  # mean of both models
    assert scores[0, 1] == pytest.approx(0.9)  # only the second model knows it
    assert np.isnan(scores[0, 2])
    assert vocab.unmapped() == ["Polka"]


def test_vote_ranks_by_mean_score_and_counts_window_winners():
    genres = ["Rock", "Jazz", "Pop"]
    scores = np.array([[0.9, 0.1, 0.2], [0.2, 0.6, 0.1], [0.8, 0.3, 0.1], [0.7, 0.2, 0.6]])
    result = vote(scores, genres, top_k=3)
    assert [g.genre for g in result] == ["Rock", "Jazz", "Pop"]
    assert result[0].score == pytest.approx(0.65)
    assert result[0].confidence == pytest.approx(0.75)
    assert result[1].confidence == pytest.approx(0.25)
    assert result[2].confidence == 0.0


def test_vote_top_k_and_min_score():
    scores = np.array([[0.9, 0.3, 0.04]])
    assert [g.genre for g in vote(scores, ["A", "B", "C"], top_k=2)] == ["A", "B"]
    assert [g.genre for g in vote(scores, ["A", "B", "C"], top_k=3, min_score=0.05)] == ["A", "B"]


def test_silent_windows_do_not_vote():
    scores = np.array([[0.1, 0.9], [0.8, 0.1], [0.7, 0.2]])
    voting = np.array([False, True, True])
    result = vote(scores, ["Rock", "Jazz"], voting)
    assert result[0].genre == "Rock" and result[0].confidence == 1.0
    assert vote(scores, ["Rock", "Jazz"], np.zeros(3, bool)) == []


def test_unknown_genres_never_win():
    scores = np.array([[np.nan, 0.1]])
    assert [g.genre for g in vote(scores, ["Ghost", "Jazz"], top_k=3)] == ["Jazz"]
