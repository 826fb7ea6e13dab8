"""scikit-learn digits loader and the small digits CNN."""
import sys

import pytest
import torch

from spectralens.data import digits as digits_mod
from spectralens.data.digits import DigitsNotInstalledError, load_digits
from spectralens.nets.digits_cnn import DigitsCNN, DigitsTrainConfig, accuracy, train_digits_cnn

pytest.importorskip("sklearn")


def test_load_digits_shapes_range_and_fixed_split():
    d = load_digits()
    assert d.x_train.shape == (1438, 1, 8, 8) and d.x_test.shape == (359, 1, 8, 8)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    for x in (d.x_train, d.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert set(d.y_test.tolist()) == set(range(10)) and d.n_classes == 10
    assert int(torch.bincount(d.y_test).min()) >= 30  # positional split, still close to balanced
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    torch.testing.assert_close(d.x_test.reshape(359, 64).double(),
                               torch.as_tensor(raw.data[-359:]) / 16.0)  # the last 20%, pixels / 16
    again = load_digits(dtype=torch.float64)
    assert again.x_train.dtype == torch.float64 and torch.equal(again.y_test, d.y_test)
    assert load_digits(test_fraction=0.5).x_test.shape[0] == 898


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", None])
def test_bad_test_fraction_is_a_value_error(bad):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=bad)


def test_non_float_dtype_is_a_value_error():
    with pytest.raises(ValueError, match="dtype"):
        load_digits(dtype=torch.int64)


def test_missing_scikit_learn_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # makes `import sklearn.datasets` fail
    with pytest.raises(DigitsNotInstalledError, match=r"pip install spectralens\[lrp\]"):
        load_digits()
    from spectralens.data.shakespeare import CorpusNotInstalledError

    assert issubclass(DigitsNotInstalledError, CorpusNotInstalledError)  # `spectralens repro` exits 2
    assert digits_mod.INSTALL_HINT == "pip install spectralens[lrp]"


def test_cnn_layers_shapes_and_batchnorm_variant():
    net = DigitsCNN()
    names = [n for n, _ in net.named_children()]
    assert names == ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc1", "relu3", "fc2"]
    assert net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    bn = DigitsCNN((4, 8), 16, batchnorm=True)
    assert [n for n, _ in bn.named_children()][:3] == ["conv1", "bn1", "relu1"]
    assert bn(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="hidden"):
        DigitsCNN(hidden=0)


def test_training_is_deterministic_and_beats_90_percent():
    d = load_digits()
    cfg = DigitsTrainConfig()
    model, res = train_digits_cnn(d, cfg, seed=0)
    assert res.test_accuracy > 0.90 and res.train_accuracy > 0.97
    assert res.losses[-1] < res.losses[0] and len(res.losses) == cfg.epochs
    assert not model.training and accuracy(model, d.x_test, d.y_test) == res.test_accuracy
    small = DigitsTrainConfig(epochs=1, channels=(4, 8), hidden=16)
    a, _ = train_digits_cnn(d, small, seed=3)
    before = torch.get_rng_state()
    b, _ = train_digits_cnn(d, small, seed=3)
    assert torch.equal(before, torch.get_rng_state())  # the global RNG is untouched
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    with pytest.raises(ValueError, match="epochs"):
        train_digits_cnn(d, DigitsTrainConfig(epochs=0))
