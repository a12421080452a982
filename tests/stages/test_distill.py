"""Distillation: the recipe's parts against direct computation, top-k, phases, vocabulary checks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.fx.experimental._config
import torch.nn.functional as F

from recslm.config import DistillConfig, DistillPhase, TrainConfig
from recslm.data.tokenizer import answer_token_ids
from recslm.errors import ConfigError, TokenizerError
from recslm.models.prefix import make_groups
from recslm.train.distill import DistillItem, RecipeWeights, distill_student, recipe_loss
from recslm.train.losses import token_divergence
from recslm.train.teacher_topk import TopkStore, compute_teacher_topk
from tests.helpers import synthetic_records, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def setup():
    records = synthetic_records(members=6, k=3)
    tok = tiny_tokenizer(records)
    groups = make_groups(records, tok)
    teacher = tiny_model(tok, "mixtral", seed=1).eval()
    student = tiny_model(tok, "llama", seed=2)
    return tok, groups, teacher, student


def _direct_parts(student, teacher, groups, tok, kind="forward_kl", beta=0.5, temperature=1.0):
    """The recipe's three parts from full, unshared forwards of every prompt, one at a time."""
    ids = answer_token_ids(tok)
    kd, ce, prompt = [], [], []
    for g in groups:
        p = len(g.prefix_ids)
        for c_index, (cand, label) in enumerate(zip(g.candidate_ids, g.labels)):
            full = torch.tensor([list(g.prefix_ids) + list(cand)])
            s = student(input_ids=full).logits[0].float()
            with torch.no_grad():
                t = teacher(input_ids=full).logits[0].float()
            kd.append(token_divergence(s[-1:], t[-1:], kind, beta=beta, temperature=temperature)[0])
            ce.append(F.cross_entropy(s[-1:], torch.tensor([ids[label]])))
            first = 0 if c_index == 0 else p  # the shared prefix's rows count once per group
            div = token_divergence(s[first:-1], t[first:-1], kind, beta=beta, temperature=temperature)
            prompt.extend(div)
    return torch.stack(kd).mean(), torch.stack(ce).mean(), torch.stack(prompt).mean()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_recipe_parts_and_weights_match_direct_computation(setup, kind):
    tok, groups, teacher, student = setup
    weights = RecipeWeights(kd=0.9, ce=0.1, prompt=0.05)
    loss, parts = recipe_loss(
        student, teacher, [DistillItem(g) for g in groups[:4]], kind=kind, weights=weights,
        answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.3, temperature=2.0,
    )
    kd, ce, prompt = _direct_parts(student, teacher, groups[:4], tok, kind, beta=0.3, temperature=2.0)
    assert float(parts["kd"]) == pytest.approx(kd.item(), rel=1e-4)
    assert float(parts["ce"]) == pytest.approx(ce.item(), rel=1e-4)
    assert float(parts["prompt_kd"]) == pytest.approx(prompt.item(), rel=1e-4)
    assert loss.item() == pytest.approx(0.9 * kd.item() + 0.1 * ce.item() + 0.05 * prompt.item(), rel=1e-4)


def test_sft_phase_is_cross_entropy_only(setup):
    tok, groups, teacher, student = setup
    weights = RecipeWeights.of(DistillConfig(), DistillPhase(loss="sft"))
    loss, parts = recipe_loss(
        student, None, [DistillItem(g) for g in groups[:3]], kind="forward_kl", weights=weights,
        answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0,
    )
    assert set(parts) == {"ce"} and loss.item() == pytest.approx(float(parts["ce"]))
    assert RecipeWeights.of(DistillConfig(kd_weight=0.7, ce_weight=0.3, prompt_weight=0.0), DistillPhase()) == RecipeWeights(0.7, 0.3, 0.0)


def test_topk_with_full_support_equals_online(setup, tmp_path):
    tok, groups, teacher, student = setup
    vocab = teacher.get_output_embeddings().weight.shape[0]
    store = compute_teacher_topk(teacher, groups, tok.pad_token_id, k=vocab, groups_per_batch=2)
    store.save(tmp_path / "t.safetensors")
    store = TopkStore.load(tmp_path / "t.safetensors", groups)
    common = dict(kind="forward_kl", weights=RecipeWeights(0.9, 0.1, 0.05), answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0)
    online, p_on = recipe_loss(student, teacher, [DistillItem(g) for g in groups[:4]], **common)
    stored, p_st = recipe_loss(student, None, [DistillItem(g, store.targets(i)) for i, g in enumerate(groups[:4])], **common)
    # float16 storage of log-probs: agreement to ~1e-3 relative
    assert stored.item() == pytest.approx(online.item(), rel=2e-3)
    assert float(p_st["prompt_kd"]) == pytest.approx(float(p_on["prompt_kd"]), rel=5e-3, abs=1e-4)
    with pytest.raises(Exception, match="different training data"):
        TopkStore.load(tmp_path / "t.safetensors", groups[1:])


def test_stored_topk_is_the_same_file_every_time(setup, tmp_path):
    """The content key promises identical bytes: the file must not depend on a hash order."""
    tok, groups, teacher, _ = setup
    store = compute_teacher_topk(teacher, groups[:3], tok.pad_token_id, k=5)
    files = []
    for i in range(6):
        store.save(tmp_path / f"t{i}.safetensors")
        files.append((tmp_path / f"t{i}.safetensors").read_bytes())
    assert len(set(files)) == 1
    loaded = TopkStore.load(tmp_path / "t0.safetensors", groups[:3])
    assert loaded.k == 5 and loaded.digest == store.digest


def test_small_topk_renormalizes_over_the_support(setup):
    tok, groups, teacher, student = setup
    store = compute_teacher_topk(teacher, groups[:2], tok.pad_token_id, k=5)
    t = store.targets(0)
    assert t.answer_ids.shape[1] == 5 and t.answer_ids.dtype == torch.int32
    assert t.prefix_ids.shape[0] == len(groups[0].prefix_ids)
    assert t.suffix_ids.shape[0] == sum(len(c) - 1 for c in groups[0].candidate_ids)
    # student == teacher gives zero divergence on the renormalized support
    _, parts = recipe_loss(
        teacher, None, [DistillItem(groups[0], t)], kind="forward_kl", weights=RecipeWeights(1, 0, 1),
        answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0,
    )
    assert float(parts["kd"]) == pytest.approx(0.0, abs=2e-3) and float(parts["prompt_kd"]) == pytest.approx(0.0, abs=2e-3)


def test_a_student_too_small_for_the_tokenizer_is_an_error_before_training(setup, tmp_path):
    tok, groups, teacher, _ = setup
    from recslm.config import ArchSpec
    from recslm.models.factory import build_model

    student = build_model(ArchSpec(family="llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2, intermediate_size=32), tok, 0)
    student.resize_token_embeddings(len(tok) - 7)
    with pytest.raises(TokenizerError, match="vocabulary mismatch"):
        distill_student(student, teacher, tok, groups, DistillConfig(), tmp_path, seed=0)
    assert not any(tmp_path.iterdir()), "nothing may be written before the check"


def test_on_policy_on_ranking_data_is_a_config_error(setup, tmp_path):
    tok, groups, teacher, student = setup
    cfg = DistillConfig(phases=[DistillPhase(on_policy_fraction=0.5)])
    with pytest.raises(ConfigError, match=r"phases\[0\].on_policy_fraction"):
        distill_student(copy.deepcopy(student), teacher, tok, groups, cfg, tmp_path, seed=0)


def _kl_to_teacher(student, teacher, groups, tok):
    _, parts = recipe_loss(
        student, teacher, [DistillItem(g) for g in groups], kind="forward_kl", weights=RecipeWeights(1, 0, 0),
        answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0,
    )
    return float(parts["kd"])


def test_two_phases_train_toward_the_teacher_and_a_rerun_skips_finished_phases(setup, tmp_path):
    tok, groups, teacher, student = setup
    teacher = copy.deepcopy(teacher)
    with torch.no_grad():  # an untrained teacher is near-uniform; sharpen it so there is something to learn
        teacher.get_output_embeddings().weight.mul_(40.0)
    train = TrainConfig(epochs=4, learning_rate=1e-2, groups_per_batch=4, save_steps=1000, logging_steps=2)
    phases = [DistillPhase(loss="forward_kl", train=train), DistillPhase(loss="jsd", train=train)]
    cfg = DistillConfig(phases=phases, kd_weight=1.0, ce_weight=0.0, prompt_weight=0.05)
    before = _kl_to_teacher(student, teacher, groups, tok)
    trained, reports = distill_student(copy.deepcopy(student), teacher, tok, groups, cfg, tmp_path, seed=0)
    assert [r.loss for r in reports] == ["forward_kl", "jsd"] and all(r.steps > 0 for r in reports)
    assert (tmp_path / "phase-0" / "final").is_dir() and (tmp_path / "phase-1" / "final").is_dir()
    after = _kl_to_teacher(trained.eval(), teacher, groups, tok)
    assert after < 0.5 * before
    again, reports2 = distill_student(copy.deepcopy(student), teacher, tok, groups, cfg, tmp_path, seed=0)
    assert all(r.skipped for r in reports2)
    for a, b in zip(trained.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


def _tensor_devices(values) -> set[str]:
    found: set[str] = set()
    for value in values:
        if isinstance(value, torch.Tensor):
            found.add(value.device.type)
        elif isinstance(value, (list, tuple)):
            found |= _tensor_devices(value)
        elif hasattr(value, "__dataclass_fields__"):
            found |= _tensor_devices([getattr(value, f) for f in value.__dataclass_fields__])
    return found


@pytest.mark.parametrize("stored", [False, True], ids=["online-teacher", "stored-topk"])
def test_the_teacher_its_targets_and_every_loss_input_meet_on_the_students_device(setup, stored, monkeypatch):
    """The student on another device than the teacher and the stored targets (the CPU), as a
    Trainer puts it on a GPU. This machine has no GPU, so the student's device is ``meta``
    (shapes without data). Every tensor that reaches a loss function, the teacher's decoder
    or its output layer is recorded: all must be on the student's device. Before the
    placement rule (recslm/models/placement.py) both cases failed here."""
    import recslm.train.distill as distill

    tok, groups, _, student = setup
    # a dense teacher: the MoE's grouped expert matmul has no fp32 kernel on the meta device
    teacher, student = tiny_model(tok, "llama", seed=1).eval(), copy.deepcopy(student).to("meta")
    items = [DistillItem(g) for g in groups[:2]]
    if stored:
        store = compute_teacher_topk(teacher, groups[:2], tok.pad_token_id, k=5)
        items = [DistillItem(g, store.targets(i)) for i, g in enumerate(groups[:2])]
    seen: dict[str, set[str]] = {}

    def recorded(name, fn):
        def wrapper(*args, **kwargs):
            seen.setdefault(name, set()).update(_tensor_devices([*args, *kwargs.values()]))
            return fn(*args, **kwargs)

        return wrapper

    for name in ("token_divergence", "topk_divergence", "distill_loss", "distill_loss_topk"):
        monkeypatch.setattr(distill, name, recorded(name, getattr(distill, name)))
    monkeypatch.setattr(distill.F, "cross_entropy", recorded("cross_entropy", F.cross_entropy))
    for name, module in (("teacher decoder", teacher.get_decoder()), ("teacher head", teacher.get_output_embeddings())):
        module.register_forward_pre_hook(lambda m, args, kwargs, name=name: seen.setdefault(name, set()).update(_tensor_devices([*args, *kwargs.values()])), with_kwargs=True)
    # masked row selection (prompt rows) calls nonzero(), whose meta kernel needs this torch switch
    with torch.fx.experimental._config.patch(meta_nonzero_assume_all_nonzero=True):
        loss, parts = recipe_loss(
            student, None if stored else teacher, items, kind="forward_kl", weights=RecipeWeights(0.9, 0.1, 0.05),
            answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0,
        )
    assert loss.device.type == "meta" and {p.device.type for p in parts.values()} == {"meta"}
    expected = {"cross_entropy", "topk_divergence", "distill_loss_topk"} if stored else {"cross_entropy", "token_divergence", "distill_loss", "teacher decoder", "teacher head"}
    assert set(seen) == expected and all(devices == {"meta"} for devices in seen.values()), seen


def _padded(model, rows: int, loud_from: int):
    """``model`` with its embeddings padded to ``rows``; the padding's output rows made loud,
    so that any comparison that kept them would be dominated by them."""
    model.resize_token_embeddings(rows, mean_resizing=False)
    with torch.no_grad():
        model.get_output_embeddings().weight[loud_from:] = 5.0
    return model


def test_padded_vocabularies_are_accepted_and_compared_on_the_tokenizers_tokens(setup, tmp_path):
    """Real checkpoints pad their output layer past the tokenizer, each its own way (Qwen3 to a
    multiple of 128 or more): a Qwen3-architecture teacher padded by 13 rows and a Llama one
    by 5, saved and reloaded as Hugging Face checkpoints, distil on the tokenizer's tokens."""
    from recslm.models.factory import load_model, save_model

    tok, groups, _, _ = setup
    vocab = len(tok)
    save_model(_padded(tiny_model(tok, "qwen3", seed=1), vocab + 13, vocab), tok, tmp_path / "teacher")
    save_model(_padded(tiny_model(tok, "llama", seed=2), vocab + 5, vocab), tok, tmp_path / "student")
    teacher, student = load_model(tmp_path / "teacher").eval(), load_model(tmp_path / "student")
    assert teacher.get_output_embeddings().weight.shape[0] == vocab + 13 and student.get_output_embeddings().weight.shape[0] == vocab + 5

    items = [DistillItem(g) for g in groups[:3]]
    common = dict(kind="forward_kl", weights=RecipeWeights(1, 0, 0), answer_ids=answer_token_ids(tok), pad_id=tok.pad_token_id, beta=0.5, temperature=1.0)
    _, parts = recipe_loss(student, teacher, items, **common, vocab_size=vocab)
    rows = [list(g.prefix_ids) + list(c) for g in groups[:3] for c in g.candidate_ids]
    with torch.no_grad():
        s = torch.stack([student(input_ids=torch.tensor([r])).logits[0, -1, :vocab] for r in rows])
        t = torch.stack([teacher(input_ids=torch.tensor([r])).logits[0, -1, :vocab] for r in rows])
    assert float(parts["kd"]) == pytest.approx(float(token_divergence(s, t, "forward_kl").mean()), rel=1e-4)
    with pytest.raises(RuntimeError):  # without the tokenizer's length the widths do not even line up
        recipe_loss(student, teacher, items, **common)

    store = compute_teacher_topk(teacher, groups[:2], tok.pad_token_id, k=vocab + 13, vocab_size=vocab)
    assert store.k == vocab and all(int(store.tensors[f"{p}_ids"].max()) < vocab for p in ("answer", "prefix", "suffix"))

    phase = DistillPhase(train=TrainConfig(max_steps=2, groups_per_batch=2, logging_steps=1, save_steps=2))
    trained, reports = distill_student(student, teacher, tok, groups, DistillConfig(phases=[phase]), tmp_path / "work", seed=0)
    assert reports[0].steps == 2 and trained.get_output_embeddings().weight.shape[0] == vocab + 5


def test_a_student_folder_with_another_tokenizer_is_refused_by_name_before_training(tmp_path):
    """The tokenizer decides compatibility, not the widths: a student checkpoint whose
    tokenizer differs from the teacher's (the data's) is refused naming the student, before
    anything trains; so is one whose output layer cannot cover the tokenizer."""
    from recslm.config import StudentSpec
    from recslm.models.factory import save_model
    from recslm.models.vocabulary import check_vocabulary
    from recslm.train.student import make_student
    from tests.helpers import data_artifact

    data = data_artifact(tmp_path / "a")
    other = tiny_tokenizer(synthetic_records(members=3, seed=5))
    save_model(tiny_model(other, "qwen3", seed=0), other, tmp_path / "other-student")
    spec = StudentSpec(name="qwen-other", path=tmp_path / "other-student")
    with pytest.raises(TokenizerError, match=r"students\[qwen-other\].path .*other-student: its tokenizer differs from the teacher's"):
        make_student(spec, DistillConfig(), "student", data, None, tmp_path / "out", tmp_path / "work", seed=0)
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()

    tok = tiny_tokenizer(synthetic_records(members=6))
    small = tiny_model(tok, "llama", seed=0)
    small.resize_token_embeddings(len(tok) - 3)
    with pytest.raises(TokenizerError, match=r"vocabulary mismatch.*student=.*the student cannot score every token"):
        check_vocabulary(small, tiny_model(tok, "qwen3", seed=1), tok)
