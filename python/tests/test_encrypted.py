"""Encrypted inference from Python: the client/server split as bytes, bit-equal with clear
mode (exact rounding), interoperable with the `fhec` command both ways."""

import subprocess
import threading
import time

import numpy as np
import pytest

import fhec
from conftest import MODELS, data


def test_execute_equals_clear_bit_for_bit(iris_exact):
    x = data("iris_mlp", "test_x")[:2]
    enc = iris_exact.predict(x, fhe="execute")
    np.testing.assert_array_equal(enc, iris_exact.predict(x, fhe="clear"))


def test_client_server_as_bytes(iris_exact, iris_keys):
    client, keys = iris_keys
    x = data("iris_mlp", "test_x")[2:4]
    server = fhec.Server(iris_exact.to_bytes())  # the server gets bytes only
    ct = client.encrypt(x)
    assert isinstance(ct, bytes) and isinstance(keys, bytes)
    reply = server.run(ct, keys)
    np.testing.assert_array_equal(client.decrypt(reply), iris_exact.predict(x, fhe="clear"))
    ints = client.decrypt_integers(reply)
    assert len(ints) == 2 and all(isinstance(v, int) for v in ints[0][0])
    # the secret key round-trips through bytes
    again = fhec.Client.from_key_bytes(iris_exact, client.key_bytes())
    assert again.key_id == client.key_id
    np.testing.assert_array_equal(again.decrypt(reply), client.decrypt(reply))


def test_python_client_and_cli_server_agree_both_ways(iris_exact, iris_keys, fhec_bin, tmp_path):
    client, keys = iris_keys
    x = data("iris_mlp", "test_x")[4:6]
    model = tmp_path / "iris.fhe"
    iris_exact.save(model)
    # Python client -> CLI server -> Python client
    (tmp_path / "server.key").write_bytes(keys)
    (tmp_path / "x.ct").write_bytes(client.encrypt(x))
    subprocess.run(
        [fhec_bin, "serve-run", str(model), "--key", str(tmp_path / "server.key"),
         "--input", str(tmp_path / "x.ct"), "--out", str(tmp_path / "y.ct")],
        check=True, capture_output=True,
    )
    from_cli = client.decrypt((tmp_path / "y.ct").read_bytes())
    from_py = client.decrypt(fhec.Server(model).run((tmp_path / "x.ct").read_bytes(), keys))
    np.testing.assert_array_equal(from_cli, from_py)
    np.testing.assert_array_equal(from_cli, iris_exact.predict(x, fhe="clear"))
    # CLI client -> Python server -> CLI client
    keydir = tmp_path / "cli-keys"
    np.save(tmp_path / "x.npy", x)
    subprocess.run([fhec_bin, "keygen", str(model), "--out", str(keydir)], check=True, capture_output=True)
    subprocess.run(
        [fhec_bin, "encrypt", str(model), "--key", str(keydir / "client.key"),
         "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "x2.ct")],
        check=True, capture_output=True,
    )
    reply = fhec.Server(model).run((tmp_path / "x2.ct").read_bytes(), (keydir / "server.key").read_bytes())
    (tmp_path / "y2.ct").write_bytes(reply)
    subprocess.run(
        [fhec_bin, "decrypt", str(model), "--key", str(keydir / "client.key"),
         "--input", str(tmp_path / "y2.ct"), "--output", str(tmp_path / "y2.npy")],
        check=True, capture_output=True,
    )
    np.testing.assert_array_equal(np.load(tmp_path / "y2.npy"), iris_exact.predict(x, fhe="clear"))
    # and the CLI's secret key opens in Python
    c2 = fhec.Client.from_key_bytes(iris_exact, (keydir / "client.key").read_bytes())
    np.testing.assert_array_equal(c2.decrypt(reply), iris_exact.predict(x, fhe="clear"))


def test_save_load_and_bytes_round_trip(iris_exact, tmp_path):
    p = tmp_path / "m.fhe"
    iris_exact.save(p)
    for m in (fhec.load(p), fhec.Model.from_bytes(iris_exact.to_bytes()), fhec.Model.load(str(p))):
        assert m.fingerprint == iris_exact.fingerprint
        assert m.parameters == iris_exact.parameters
        x = data("iris_mlp", "test_x")
        np.testing.assert_array_equal(m.predict(x, fhe="clear"), iris_exact.predict(x, fhe="clear"))
    assert p.read_bytes() == iris_exact.to_bytes()


def test_encrypted_work_releases_the_gil(iris_exact, iris_keys):
    client, keys = iris_keys
    server = fhec.Server(iris_exact)
    ct = client.encrypt(data("iris_mlp", "test_x")[:2])
    server.run(ct, keys)  # expand the keys first
    ticks = []
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=count)
    t.start()
    t0 = time.perf_counter()
    server.run(ct, keys)
    t1 = time.perf_counter()
    stop.set()
    t.join()
    during = [s for s in ticks if t0 < s < t1]
    # a thread holding the GIL would stall the counter for the whole run; free, it ticks
    # every millisecond or so (20 a second is a loose floor for a loaded machine)
    assert len(during) >= 20 * (t1 - t0), (len(during), t1 - t0)
    gaps = np.diff(during)
    assert gaps.max() < 0.5, gaps.max()


def test_progress_reaches_every_table_lookup(iris_exact, iris_keys):
    client, keys = iris_keys
    seen = []
    fhec.Server(iris_exact).run(client.encrypt(data("iris_mlp", "test_x")[:3]), keys,
                                progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] == 3 * iris_exact.parameters["table_lookups"]


CTRL_C = """
import signal, threading, time, os, sys
import numpy as np, fhec
# Ctrl-C as an interactive Python sees it, whatever this process inherited: a shell starts
# background jobs with SIGINT ignored, and Python then installs no handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
fhec.set_progress(False)
m = fhec.compile(sys.argv[1], np.load(sys.argv[2]), rounding_method="exact")
c = m.client(); c.keygen(); keys = c.evaluation_keys()
s = fhec.Server(m)
ct = c.encrypt(np.repeat(np.load(sys.argv[3])[:1], 200, axis=0))  # minutes of work
threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
t0 = time.perf_counter()
try:
    s.run(ct, keys)
    print("finished")
except KeyboardInterrupt:
    print("interrupted after %.2f s" % (time.perf_counter() - t0))
"""


def test_ctrl_c_stops_an_encrypted_run(tmp_path):
    import sys

    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    r = subprocess.run(
        [sys.executable, str(script), str(MODELS / "iris_mlp.onnx"), str(MODELS / "iris_mlp_calib.npy"),
         str(MODELS / "iris_mlp_test_x.npy")],
        capture_output=True, text=True, timeout=300,
    )
    assert "interrupted after" in r.stdout, (r.stdout, r.stderr)
    secs = float(r.stdout.split("interrupted after ")[1].split()[0])
    assert secs < 4.0, secs  # the 100 ms wait and one stage, not the 200 samples
