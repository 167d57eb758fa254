"""The listening measures (playbach/listening.py) on hand-made notes whose answers are known, and
`playbach listen` on real chorales and on a corpus the bundle cannot encode."""
import json
import math
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from needs import DEFAULT, jsb_file, write_jsb
from playbach.cli import main
from playbach.keys import PROFILES
from playbach.listening import (Notes, clustered_mean, measure_piece, measure_segment, segments,
                                total_variation)

TPQ = 4                      # ticks per quarter, as the JSB grid
WHOLE = 16 * TPQ             # one segment


def notes(*rows: tuple[int, int, int]) -> Notes:
    """(start, pitch, duration) rows in ticks."""
    a = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return Notes(a[:, 0], a[:, 1], a[:, 2], TPQ)


def test_a_held_triad_then_a_major_seventh():
    """C E G held through the segment, B added for its second half: the B against the C is a major
    7th at 16 of the 32 eighth points; four pitches sound at those 16; four pitches struck;
    every note is a half note or longer; the top line moves once, G up to B (4 semitones)."""
    piece = notes((0, 60, WHOLE), (0, 64, WHOLE), (0, 67, WHOLE), (WHOLE // 2, 71, WHOLE // 2))
    m = measure_segment(piece, 0, WHOLE)
    assert m["dissonance"] == 0.5 and m["four_sounding"] == 0.5
    assert m["distinct_pitches"] == 4 and m["long_notes"] == 1.0
    assert m["top_steps"] == 0.0                      # its one move is a major third
    assert math.isnan(m["bass_interval"])             # the bass never moves
    assert m["durations"] == Counter({WHOLE: 3, WHOLE // 2: 1})
    assert m["onset_intervals"] == Counter({WHOLE // 2: 1})


def test_a_tritone_and_a_minor_second_are_dissonant_a_fifth_is_not():
    for upper, dissonant in ((66, 1.0), (61, 1.0), (67, 0.0), (72 + 1, 1.0), (64, 0.0)):
        m = measure_segment(notes((0, 60, WHOLE), (0, upper, WHOLE)), 0, WHOLE)
        assert m["dissonance"] == dissonant, upper


def test_lines_steps_and_leaps():
    """A soprano C D E G (moves 2, 2, 3: two of three are steps) over a bass C G E (moves 7, 3)."""
    piece = notes((0, 72, 4), (4, 74, 4), (8, 76, 4), (12, 79, 52),
                  (0, 48, 4), (4, 55, 4), (8, 52, 56))
    m = measure_segment(piece, 0, WHOLE)
    assert m["top_steps"] == pytest.approx(2 / 3)
    assert m["bass_interval"] == 5.0                  # (7 + 3) / 2; the held E makes no move
    assert m["long_notes"] == pytest.approx(2 / 7)
    assert m["onset_intervals"] == Counter({4: 3})


def test_keys_of_the_windows():
    """A C major triad alone: every window is C major, as clear as the triad's histogram correlates
    with Krumhansl's C major profile. Held for 10 quarters, then silence, then an F# major triad
    from quarter 12: windows 0-8 and 4-12 hold only the C triad, 8-16 twice as much F# as C: one
    change in two, and a third window less clear than the first two."""
    triad = np.zeros(12)
    triad[[0, 4, 7]] = 1
    r = np.corrcoef(triad, PROFILES["krumhansl"][0])[0, 1]
    c_only = measure_segment(notes((0, 60, WHOLE), (0, 64, WHOLE), (0, 67, WHOLE)), 0, WHOLE)
    assert c_only["key_changes"] == 0.0 and c_only["key_clarity"] == pytest.approx(r)
    c, fs = 10 * TPQ, 12 * TPQ
    piece = notes((0, 60, c), (0, 64, c), (0, 67, c), (fs, 66, WHOLE - fs), (fs, 70, WHOLE - fs), (fs, 73, WHOLE - fs))
    m = measure_segment(piece, 0, WHOLE)
    assert m["key_changes"] == 0.5
    assert (2 * r - 1) / 3 < m["key_clarity"] < r


def test_whole_segments_only():
    piece = notes((0, 60, 40 * TPQ))
    assert segments(piece) == [(0, WHOLE), (WHOLE, 2 * WHOLE)]
    assert segments(piece, 10 * TPQ) == [(10 * TPQ, 26 * TPQ)]
    assert len(measure_piece(notes((0, 60, 15 * TPQ)))) == 0


def test_the_standard_error_is_clustered_by_piece():
    """Pieces [1, 1] and [3]: mean 5/3; each piece's summed deviation is -4/3 and +4/3, so the error
    is sqrt(32/9) / 3, not the naive std / sqrt(3) of three independent segments."""
    mean, se = clustered_mean([[1.0, 1.0], [3.0, float("nan")]])
    assert mean == pytest.approx(5 / 3) and se == pytest.approx(math.sqrt(32 / 9) / 3)


def test_total_variation():
    assert total_variation(Counter({1: 5}), Counter({2: 1})) == 1.0
    assert total_variation(Counter({1: 1, 2: 1}), Counter({1: 3})) == 0.5
    assert total_variation(Counter({4: 2, 8: 2}), Counter({8: 1, 4: 1})) == 0.0


def two_chorales(tmp_path, change=None):
    document = json.loads(jsb_file().read_text())
    test = [document["test"][0], document["test"][1]]
    if change:
        change(test)
    return write_jsb(tmp_path / "two.json", {"test": test})


def test_listen_on_two_real_chorales(tmp_path):
    """Bach's side is the two chorales' own figures; each plan group is its takes', in range; the
    JSON says which measures sit in Bach's band."""
    out = tmp_path / "listen.json"
    assert main(["listen", str(DEFAULT), "--corpus", str(two_chorales(tmp_path)), "--split", "test",
                 "--takes", "2", "--events", "200", "--plan", "0,4", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    rows = json.loads(jsb_file().read_text())["test"][0][:64]   # the first chorale's first segment
    assert r["bach"]["pieces"] == 2 and r["bach"]["segments"] >= 2
    assert len({p for row in rows for p in row if p >= 0}) <= r["bach"]["distinct_pitches"]["mean"] * 2
    for group in ("plan=0", "plan=4"):
        g = r[group]
        assert g["pieces"] == 2 and g["segments"] >= 4
        assert 0 <= g["dissonance"]["mean"] <= 1 and g["dissonance"]["se"] >= 0
        assert 0 <= g["durations"]["tv_to_bach"]["mean"] <= 1
        assert set(g["in_band"]) == set(r["goal"])


def test_listen_names_the_piece_and_pitch_the_bundle_cannot_play(tmp_path, caplog):
    def too_low(test):
        test[1][3] = [60, 55, 50, 12]
    out = tmp_path / "listen.json"
    code = main(["listen", str(DEFAULT), "--corpus", str(two_chorales(tmp_path, too_low)), "--json", str(out)])
    assert code == 2 and "test/001" in caplog.text and "pitch 12" in caplog.text
    assert not out.exists()


def test_listen_refuses_a_bad_plan_list(tmp_path, caplog):
    assert main(["listen", str(DEFAULT), "--corpus", str(two_chorales(tmp_path)), "--plan", "0,x"]) == 2
    assert "--plan" in caplog.text


def test_listen_and_generate_import_no_tensorflow(tmp_path):
    corpus = two_chorales(tmp_path)
    code = (f"import sys; from playbach.cli import main; "
            f"assert main(['listen', {str(DEFAULT)!r}, '--corpus', {str(corpus)!r}, '--takes', '1', "
            f"'--events', '80', '--plan', '2']) == 0; "
            f"assert main(['generate', {str(DEFAULT)!r}, '--out', {str(tmp_path / 't.mid')!r}, '--events', '20']) == 0; "
            f"bad = {{'tensorflow', 'music21'}} & set(sys.modules); assert not bad, bad")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
