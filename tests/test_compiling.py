"""`--compile`: the compiled blocks compute what the eager ones do, in training too.

torch.compile runs the system's C++ compiler on the CPU; the first test pays about 15 s for
it (later ones reuse the compiled code).
"""
import numpy as np
import pytest
import torch

from cmx_cli.pipelines import train
from cmx_cli.settings import TrainingSettings
from models import (
    ChordMixerConfig, ClassifierConfig, SequenceClassifier, TransformerConfig, set_compiled)
from tests.helpers import COMPILER_WARNINGS, run_cli
from tests.test_predict_fasta import trained_run  # noqa: F401 - a fixture
from tests.test_train_pipeline import _config, _weights

pytestmark = [pytest.mark.usefixtures("fresh_compiler"),
              *(pytest.mark.filterwarnings(warning) for warning in COMPILER_WARNINGS)]


def _batch(lengths):
    offsets = torch.tensor([0, *np.cumsum(lengths)])
    tokens = torch.randint(0, 4, (int(offsets[-1]),), generator=torch.Generator().manual_seed(1))
    return tokens, offsets


def _twins(trunk):
    torch.manual_seed(0)
    eager = SequenceClassifier(ClassifierConfig(trunk, n_classes=3))
    compiled = SequenceClassifier(ClassifierConfig(trunk, n_classes=3))
    compiled.load_state_dict(eager.state_dict())
    set_compiled(compiled, True)
    return eager, compiled


@pytest.mark.parametrize("arch", ["chordmixer", "reversible", "transformer"])
def test_compiled_blocks_give_the_eager_outputs_and_gradients(arch, fresh_compiler):
    trunk = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.0,
                             reversible=arch == "reversible")
    if arch == "transformer":
        trunk = TransformerConfig.matching(trunk)
    eager, compiled = _twins(trunk)
    # Batches of other sizes and depths run through the same dynamic-shape graph.
    for lengths in ([50, 120, 7], [300], [90, 91, 92, 93]):
        tokens, offsets = _batch(lengths)
        expected, output = eager(tokens, offsets), compiled(tokens, offsets)
        assert torch.allclose(output, expected, atol=1e-5)
        expected.square().sum().backward()
        output.square().sum().backward()
    assert fresh_compiler["stats"]["unique_graphs"] > 0  # it did run compiled
    for ours, theirs in zip(compiled.parameters(), eager.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-4)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(tokens, offsets), eager(tokens, offsets), atol=1e-5)
    set_compiled(compiled, False)
    assert not any(getattr(module, "compiled_feed_forward", None) for module in compiled.modules())


def test_compiled_blocks_under_checkpointing_give_the_eager_gradients(fresh_compiler):
    from models import set_checkpointing

    trunk = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.0)
    eager, compiled = _twins(trunk)
    set_checkpointing(compiled, True)  # two-level: segments, then blocks, recomputed
    tokens, offsets = _batch([3, 40, 300, 17])
    expected, output = eager(tokens, offsets), compiled(tokens, offsets)
    expected.square().sum().backward()
    output.square().sum().backward()
    assert fresh_compiler["stats"]["unique_graphs"] > 0
    assert torch.allclose(output, expected, atol=1e-5)
    for ours, theirs in zip(compiled.parameters(), eager.parameters()):
        assert torch.allclose(ours.grad, theirs.grad, atol=1e-4)


def test_compiled_reversible_blocks_replay_their_dropout_in_backward(fresh_compiler):
    """Backward recomputes each half with the compiler's own random numbers: the same ones."""
    from tests.test_reversible import _ordinary_backward

    trunk = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.3,
                             reversible=True)
    _, compiled = _twins(trunk)
    tokens, offsets = _batch([3, 40, 300, 17])
    gradients = []
    for reversible_backward in (False, True):
        compiled.zero_grad()
        torch.manual_seed(11)
        if reversible_backward:
            output = compiled(tokens, offsets)
        else:
            with _ordinary_backward():
                output = compiled(tokens, offsets)
        output.square().sum().backward()
        gradients.append([p.grad.clone() for p in compiled.parameters()])
    assert fresh_compiler["stats"]["unique_graphs"] > 0
    for plain, reversible in zip(*gradients):
        assert torch.allclose(reversible, plain, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
def test_compiled_blocks_on_cuda_give_the_eager_outputs():
    trunk = ChordMixerConfig(max_len=300, track_size=4, hidden_size=16, dropout=0.0)
    eager, compiled = _twins(trunk)
    eager, compiled = eager.cuda(), compiled.cuda()
    tokens, offsets = _batch([50, 120, 7])
    tokens, offsets = tokens.cuda(), offsets.cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        expected, output = eager(tokens, offsets).float(), compiled(tokens, offsets).float()
    assert torch.allclose(output, expected, atol=2e-2)


def test_compiled_dropout_drops_in_training_only(fresh_compiler):
    trunk = ChordMixerConfig(max_len=64, track_size=4, hidden_size=32, dropout=0.5)
    eager, compiled = _twins(trunk)
    tokens, offsets = _batch([64, 20])
    first, second = compiled(tokens, offsets), compiled(tokens, offsets)
    assert fresh_compiler["stats"]["unique_graphs"] > 0
    assert not torch.allclose(first, second)
    eager.eval(), compiled.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(tokens, offsets), eager(tokens, offsets), atol=1e-5)


def test_cmx_train_with_compile_learns_the_eager_weights(data_dir, tmp_path, fresh_compiler):
    counters = fresh_compiler
    settings = TrainingSettings(epochs=1, learning_rate=3e-3, seed=1)
    train.run(_config(data_dir, tmp_path / "eager", training=settings))
    assert counters["stats"]["unique_graphs"] == 0
    train.run(_config(data_dir, tmp_path / "compiled", training=settings, compile_blocks=True))
    assert counters["stats"]["unique_graphs"] > 0  # the blocks did run compiled
    eager = _weights(tmp_path / "eager" / "last.pt")
    compiled = _weights(tmp_path / "compiled" / "last.pt")
    assert eager.keys() == compiled.keys()
    for key in eager:
        assert torch.allclose(compiled[key], eager[key], atol=1e-4), key
    assert train.read_config(tmp_path / "compiled").runtime.compile_blocks


@pytest.fixture
def broken_compiler(tmp_path, monkeypatch, fresh_compiler):
    """A C++ compiler that does not exist, and an empty compiler cache; both undone after the
    test, with the compiler search's cached answer, so that no later test inherits them.

    torch's own ``config.patch`` sets the option: its config objects are proxies that
    ``monkeypatch.setattr`` cannot always see into (pytest 9.2 looks attributes up
    statically).
    """
    import torch._inductor.config as inductor_config
    from torch._inductor import cpp_builder

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    cpp_builder.cpp_compiler_search.cache_clear()
    with inductor_config.patch({"cpp.cxx": (None, str(tmp_path / "no-such-c++"))}):
        yield
    cpp_builder.cpp_compiler_search.cache_clear()


def _check_compile_error(result):
    assert result.exit_code == 1, result.output
    message = result.output.strip()
    assert message.startswith("Error: --compile: torch.compile failed:"), message
    assert "no-such-c++" in message and "Hint: run without --compile" in message
    assert "\n" not in message and "Traceback" not in message


def test_a_compiler_that_fails_is_a_one_line_error(data_dir, tmp_path, broken_compiler):
    capsule = data_dir / "capsule_small"
    result = run_cli(
        "train", "--fasta", f"{capsule / 'klebsiella.fa'}:Klebsiella",
        "--fasta", f"{capsule / 'acinetobacter.fa'}:Acinetobacter", "--out", str(tmp_path / "run"),
        "--track-size", "4", "--hidden-size", "16", "--epochs", "1", "--device", "cpu",
        "--compile", "--quiet")
    _check_compile_error(result)


def test_predict_with_a_failing_compiler_writes_nothing(trained_run, data_dir, tmp_path,
                                                        broken_compiler):
    output = tmp_path / "predictions.tsv"
    result = run_cli(
        "predict", str(data_dir / "capsule_small" / "query.fa"), "--model", str(trained_run),
        "-o", str(output), "--device", "cpu", "--compile", "--quiet")
    _check_compile_error(result)
    assert not output.exists()
