"""%tensor_inspect on tensors: the card, statistics for every dtype and layout, histogram, views."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from torchmagic.core.tensorstats import inspect_tensor
from torchmagic.display.inspect_view import html, text
from torchmagic.display.png import png_bytes

KEYS = {"min", "max", "mean", "std", "norm", "nan", "posinf", "neginf", "zeros"}


def stats(t: torch.Tensor) -> dict:
    r = inspect_tensor(t, "t")
    assert KEYS <= set(r.stats), r.stats
    assert all(v is None or type(v) in (int, float) for v in r.stats.values()), r.stats
    return r.stats


def test_float_statistics_match_torch():
    torch.manual_seed(0)
    x = torch.randn(1000) * 3 + 1
    x[:7] = 0
    s = stats(x)
    assert s["min"] == pytest.approx(x.min().item()) and s["max"] == pytest.approx(x.max().item())
    assert s["mean"] == pytest.approx(x.mean().item(), rel=1e-5)
    assert s["std"] == pytest.approx(x.std().item(), rel=1e-5)
    assert s["norm"] == pytest.approx(torch.linalg.vector_norm(x).item(), rel=1e-5)
    assert (s["zeros"], s["nan"], s["posinf"], s["neginf"]) == (7, 0, 0, 0)


def test_nonfinite_values_are_counted_apart_and_excluded():
    x = torch.tensor([1.0, float("nan"), float("inf"), -float("inf"), 0.0, 3.0, float("nan")])
    s = stats(x)
    assert (s["nan"], s["posinf"], s["neginf"], s["zeros"]) == (2, 1, 1, 1)
    assert (s["min"], s["max"]) == (0.0, 3.0)
    assert s["mean"] == pytest.approx(4 / 3) and s["std"] == pytest.approx(torch.tensor([1.0, 0, 3]).std().item())


def test_all_nan_and_zero_element_do_not_raise():
    s = stats(torch.full((5,), float("nan")))
    assert s["nan"] == 5 and s["min"] is None and s["mean"] is None
    r = inspect_tensor(torch.empty(0, 3), "e")
    assert r.stats["numel"] == 0 and r.stats["min"] is None and r.histogram is None and r.views == []
    assert "[0, 3]" in text(r)


def test_constant_at_large_magnitude_has_zero_spread_and_one_bar():
    r = inspect_tensor(torch.full((1000,), 1e16), "c")
    assert r.stats["std"] == 0.0 and r.stats["min"] == r.stats["max"] == r.stats["mean"]
    assert r.stats["mean"] == pytest.approx(1e16, rel=1e-6)
    counts, edges = r.histogram
    assert counts.tolist() == [1000]


@pytest.mark.parametrize(
    "dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64]
)
def test_integer_dtypes_give_exact_extremes(dtype):
    x = torch.arange(0, 100).to(dtype)
    s = stats(x)
    assert (s["min"], s["max"], s["zeros"]) == (0, 99, 1)
    assert s["mean"] == pytest.approx(49.5) and s["std"] == pytest.approx(torch.arange(100.0).std().item())


def test_bool_counts_true_and_false():
    s = stats(torch.tensor([True, False, True, True]))
    assert (s["true"], s["false"], s["min"], s["max"]) == (3, 1, 0, 1) and s["mean"] == 0.75


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
def test_low_precision_floats_are_upcast(dtype):
    x = torch.tensor([-2.0, 0.5, 1.0, 0.0]).to(dtype)
    s = stats(x)
    assert (s["min"], s["max"], s["zeros"]) == (-2.0, 1.0, 1)


def test_float8_infinity_is_counted():
    s = stats(torch.tensor([1.0, float("inf")]).to(torch.float8_e5m2))
    assert s["posinf"] == 1 and s["max"] == 1.0


def test_complex_reports_magnitude_and_phase():
    z = torch.tensor([3 + 4j, -1 + 0j, 1j], dtype=torch.complex64)
    s = stats(z)
    assert (s["min"], s["max"]) == (1.0, 5.0)
    assert s["phase_max"] == pytest.approx(math.pi, rel=1e-6) and s["phase_min"] == pytest.approx(math.atan2(4, 3), rel=1e-6)
    assert s["real_mean"] == pytest.approx(2 / 3)


def test_quantized_is_dequantized_with_scale():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor(torch.tensor([0.0, 1.0, 2.0]), 0.5, 2, torch.quint8)
    r = inspect_tensor(q, "q")
    assert r.card.kind == "quantized" and "dequantized" in r.note
    assert (r.stats["min"], r.stats["max"], r.stats["scale"], r.stats["zero_point"]) == (0.0, 2.0, 0.5, 2)
    assert (r.stats["int_min"], r.stats["int_max"]) == (2, 6)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_statistics_include_implicit_zeros(layout):
    dense = torch.zeros(4, 5)
    dense[0, 1], dense[2, 3] = 2.0, -4.0
    sp = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    r = inspect_tensor(sp, "s")
    s = r.stats
    assert (s["nnz"], s["zeros"], s["min"], s["max"]) == (2, 18, -4.0, 2.0)
    assert s["mean"] == pytest.approx(dense.mean().item()) and s["std"] == pytest.approx(dense.std().item())
    assert s["norm"] == pytest.approx(dense.norm().item()) and r.card.strides is None


def test_nested_tensor_reduces_all_components():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nt = torch.nested.nested_tensor([torch.ones(2, 3), torch.zeros(4, 3)])
    r = inspect_tensor(nt, "nt")
    assert r.card.shape == [(2, 3), (4, 3)] and r.stats["numel"] == 18 and r.stats["zeros"] == 12
    assert "nested (2)" in text(r)


def test_meta_and_fake_tensors_get_a_shape_only_card():
    r = inspect_tensor(torch.empty(3, 4, device="meta"), "m")
    assert r.card.kind == "meta" and r.stats == {} and "no values" in r.note and r.card.shape == (3, 4)
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty(2, 5)
    r = inspect_tensor(fake, "f")
    assert r.card.kind == "fake" and r.stats == {} and "<img" not in html(r)


def test_views_are_indexed_without_copying_the_whole_tensor():
    base = torch.randn(1, 7)
    expanded = base.expand(50_000, 7)
    r = inspect_tensor(expanded, "e")
    assert r.card.storage_bytes == 28 and r.card.nbytes == 50_000 * 7 * 4 and r.card.strides == (0, 1)
    assert r.stats["max"] == pytest.approx(base.max().item()) and r.sample_size == 7  # each distinct value once
    t = torch.randn(300, 200).t()
    s = inspect_tensor(t, "t")
    assert s.card.contiguous is False and s.stats["min"] == pytest.approx(t.min().item())


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(3, 1, 5).expand(3, 4, 5),
        lambda: torch.tensor([1.0, float("nan"), 0.0, float("inf")]).reshape(4, 1).expand(4, 6),
        lambda: torch.tensor([True, False, True]).expand(5, 3),
        lambda: torch.arange(6).reshape(2, 1, 3).expand(2, 7, 3),
        lambda: torch.tensor(2.0).expand(9),
        lambda: torch.randn(1, 3, 1, 1).expand(8, 3, 16, 16),
    ],
)
def test_expanded_views_give_the_statistics_of_their_copy(make):
    x = make()
    r, ref = inspect_tensor(x, "x"), inspect_tensor(x.contiguous(), "copy")
    assert set(r.stats) == set(ref.stats)
    for key, want in ref.stats.items():
        assert r.stats[key] == (want if want is None or isinstance(want, int) else pytest.approx(want, rel=1e-5)), key
    assert [v.kind for v in r.views] == [v.kind for v in ref.views]
    for mine, theirs in zip(r.views, ref.views):
        if mine.kind == "channels":
            assert mine.data == [pytest.approx(row, rel=1e-5) for row in theirs.data]


def test_a_bias_expanded_to_a_trillion_elements_answers_at_once():
    r = inspect_tensor(torch.tensor([0.0, 2.0]).expand(500_000_000_000, 2), "huge")
    assert r.stats["numel"] == 10**12 and r.stats["zeros"] == 5 * 10**11 and r.stats["mean"] == 1.0
    assert r.stats["std"] == pytest.approx(1.0) and r.card.storage_bytes == 8


def test_over_2_pow_24_elements():
    x = torch.zeros(2**24 + 3, dtype=torch.uint8)
    x[-1] = 7
    s = stats(x)
    assert (s["max"], s["zeros"], s["numel"]) == (7, 2**24 + 2, 2**24 + 3)


def test_requires_grad_builds_no_graph_and_global_rng_is_untouched():
    w = torch.randn(2000, requires_grad=True)
    y = w * 2
    saved = []
    rng = torch.get_rng_state()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        r = inspect_tensor(y, "y")
    assert saved == [] and torch.equal(rng, torch.get_rng_state())
    assert r.card.requires_grad and r.card.grad_fn == "MulBackward0" and not r.card.has_grad
    assert w.grad is None and r.stats["max"] == pytest.approx(y.max().item())


def test_histogram_sample_is_reproducible_and_bounded():
    x = torch.randn(200_000)
    a, b = inspect_tensor(x, "x"), inspect_tensor(x, "x")
    assert a.sample_size == 65536 and np.array_equal(a.histogram[0], b.histogram[0])
    assert a.histogram[0].sum() == 65536


def test_views_by_shape():
    img = torch.rand(3, 20, 30)
    kinds = [v.kind for v in inspect_tensor(img, "i").views]
    assert kinds == ["image", "channels"]
    assert inspect_tensor(img, "i").views[0].data.shape == (20, 30, 3)
    batch = inspect_tensor(torch.rand(5, 3, 8, 8), "b")
    assert [v.kind for v in batch.views] == ["image", "channels"] and "5 images" in batch.views[0].title
    chans = batch.views[1].data
    assert len(chans) == 3 and set(chans[0]) == {"channel", "min", "max", "mean", "std"}
    assert inspect_tensor(torch.randn(40, 50), "h").views[0].kind == "heatmap"
    slices = inspect_tensor(torch.randn(2, 3, 4, 5, 6), "s").views
    assert [v.title for v in slices] == [
        "slice [0, 0, 0, :, :]",
        "slice [0, 0, 1, :, :]",
        "slice [0, 0, 2, :, :]",
        "slice [0, 0, 3, :, :]",
    ]


def test_html_is_static_and_escaped_and_png_is_valid():
    r = inspect_tensor(torch.rand(3, 8, 8), "<x>")
    page = html(r)
    assert "&lt;x&gt;" in page and "<script" not in page and "data:image/png;base64," in page and "<svg" in page
    png = png_bytes(np.zeros((4, 5, 3), np.uint8))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[16:24] == b"\x00\x00\x00\x05\x00\x00\x00\x04"


def test_magic_returns_result_with_plain_stats(shell):
    shell.user_ns["x"] = torch.arange(12.0).reshape(3, 4)
    shell.run_cell("r = %tensor_inspect x[1:, ::2]")
    r = shell.user_ns["r"]
    assert r.kind == "tensor" and r.stats["min"] == 4.0 and r.stats["max"] == 10.0 and r.card.contiguous is False
    assert "x[1:, ::2]" in r.summary()


def test_magic_usage_errors_are_one_line(shell, capsys):
    from IPython.core.error import UsageError

    shell.user_ns.update(torch=torch, arr=np.zeros((2, 3)))
    cases = {
        "undefined_name": "undefined_name",
        "1/0": "ZeroDivisionError",
        "arr": "numpy.ndarray of shape (2, 3)",
        "'text'": "is a str",
    }
    for expr, expected in cases.items():
        with pytest.raises(UsageError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
            shell.run_line_magic("tensor_inspect", expr)
        assert "\n" not in str(info.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_statistics_need_one_transfer_per_view_and_no_item():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Transfers(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.to_host, self.items = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            if func is torch.ops.aten._local_scalar_dense.default:
                self.items += 1
            src = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if isinstance(out, torch.Tensor) and out.device.type == "cpu" and src is not None and src.is_cuda:
                self.to_host += 1
            return out

    torch.manual_seed(0)
    cpu = torch.randn(8, 3, 32, 32)
    x = cpu.cuda()
    with Transfers() as mode:
        r = inspect_tensor(x, "x")
    assert mode.items == 0
    assert mode.to_host <= 1 + len(r.views), (mode.to_host, [v.kind for v in r.views])
    ref = inspect_tensor(cpu, "cpu")
    for k in ("min", "max", "zeros", "nan"):
        assert r.stats[k] == ref.stats[k]
    assert r.stats["mean"] == pytest.approx(ref.stats["mean"], abs=1e-5)
    assert r.stats["std"] == pytest.approx(ref.stats["std"], rel=1e-5)
    bad = x.clone()
    bad[0, 0, 0, :3] = float("nan")
    assert inspect_tensor(bad, "b").stats["nan"] == 3


def test_complex32_is_upcast_to_complex64():
    z = torch.tensor([3 + 4j, -1 + 0j, 1j], dtype=torch.complex64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # creating ComplexHalf warns that its support is experimental
        half = z.to(torch.complex32)
    r, ref = inspect_tensor(half, "h"), inspect_tensor(z, "z")
    assert r.stats == pytest.approx(ref.stats) and "complex32 upcast to complex64" in r.note


def test_float4_decodes_both_nibbles_of_every_byte():
    packed = torch.tensor([0x12, 0xF0, 0x07, 0x88], dtype=torch.uint8).view(torch.float4_e2m1fn_x2)
    r = inspect_tensor(packed, "p")
    values = [1.0, 0.5, 0.0, -6.0, 6.0, 0.0, -0.0, -0.0]  # low nibble, high nibble
    assert (r.stats["numel"], r.stats["min"], r.stats["max"], r.stats["zeros"]) == (8, -6.0, 6.0, 4)
    assert r.stats["mean"] == pytest.approx(np.mean(values)) and r.card.numel == 4 and r.views == []
    assert "two 4-bit floats" in r.note


def test_mkldnn_reduces_its_dense_copy():
    x = torch.randn(2, 3, 4, 4)
    r, ref = inspect_tensor(x.to_mkldnn(), "m"), inspect_tensor(x, "x")
    assert r.card.kind == "mkldnn" and r.card.strides is None and r.card.nbytes == x.numel() * 4
    assert r.stats == pytest.approx(ref.stats) and [v.kind for v in r.views] == ["image", "channels"]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: torch.zeros(4, dtype=torch.uint8).view(torch.bits8), ["bits8 holds raw bits", "t.view(torch.uint8)"]),
        (lambda: torch.zeros(4, dtype=torch.int16).view(torch.bits16), ["bits16", "t.view(torch.uint16)"]),
        (lambda: torch.zeros(4, dtype=torch.uint8).view(torch.uint4), ["uint4 is a shell dtype", "no statistics"]),
        (lambda: torch.zeros(4, dtype=torch.uint8).view(torch.int3), ["int3 is a shell dtype"]),
        (lambda: torch.empty(4, dtype=torch.qint8), ["quantized tensor without a quantizer"]),
    ],
)
def test_values_torch_cannot_read_get_a_card_and_a_one_line_reason(make, words):
    r = inspect_tensor(make(), "t")
    assert r.card.shape == (4,) and r.card.nbytes == 4 * (2 if "bits16" in words[0] else 1) and r.stats == {}
    assert "\n" not in r.note and all(w in r.note for w in words), r.note
    assert words[0].split()[0] in text(r) and "<img" not in html(r)


def test_bool_images_are_black_and_white():
    img = torch.zeros(3, 4, 4, dtype=torch.bool)
    img[:, :2] = True
    pixels = inspect_tensor(img, "b").views[0].data
    assert pixels[0, 0].tolist() == [255, 255, 255] and pixels[3, 0].tolist() == [0, 0, 0]
