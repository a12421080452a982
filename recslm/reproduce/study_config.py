"""The study's config (``configs/reproduce.yaml``): its base, seeds, rows and the knobs that
trade time for interval width; loaded with errors that name the file and the field. What the
rows measure is in :mod:`recslm.reproduce.study`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from recslm.config import StrictModel, StudentSpec
from recslm.reproduce.generative import GenerativeRow, GenerativeStudy

RankingRow = Literal["kd_vs_sft", "scarce_labels", "loss_choice", "prune_ratio", "size", "redistill_loss", "gradual", "calibration", "quantization", "kv_prune", "serving"]
RowName = Literal[RankingRow, GenerativeRow]  # one literal (nested literals flatten): one error message naming every row
RANKING_ROWS: tuple[str, ...] = get_args(RankingRow)

class StudyConfig(StrictModel):
    """``configs/reproduce.yaml``: the base pipeline, seeds, rows and the knobs that trade time for interval width."""

    base: Path = Field(description="The pipeline config every arm starts from (its data, teacher, distill recipe; its students are replaced).")
    set: list[str] = Field(default_factory=list, description="Overrides applied to the base for every arm (key.path=value).")
    student: StudentSpec = Field(description="The student every row measures (each arm trains only it).")
    seeds: list[int] = Field([0, 1, 2], min_length=2, description="distill.seed of each paired repetition: more seeds, narrower intervals, longer study.")
    rows: list[RowName] = Field(["kd_vs_sft", "scarce_labels", "loss_choice", "prune_ratio", "size", "redistill_loss", "gradual", "calibration", "quantization", "kv_prune", "serving"], min_length=1)
    prune_ratios: list[float] = Field([0.25, 0.5, 0.75, 0.875], min_length=1, description="One-shot MLP pruning ratios (prune_ratio, size).")
    size_margin: float = Field(0.01, gt=0, description="size, kv_prune: AUC difference the paper's 'modest loss' allows (absolute mean AUC).")
    label_fraction: float = Field(0.2, gt=0, lt=1, description="scarce_labels: the share of training groups whose labels the students see.")
    redistill_ratio: float = Field(0.75, gt=0, lt=1, description="redistill_loss, gradual, calibration: the MLP ratio pruned; one whose one-shot pruning loses at least 1 % AUC (read it off prune_ratio).")
    redistill_steps: int = Field(200, ge=2, description="redistill_loss, gradual, kv_prune: re-training steps after pruning, the same in every arm (gradual: half after each of its two steps); even.")
    redistill_learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate of the re-training after pruning.")
    kv_fraction: float = Field(0.5, gt=0, lt=1, description="kv_prune: the share of key/value groups pruned.")
    calibration_counts: list[int] = Field([64, 128, 256], min_length=2, description="calibration: in-domain calibration prompts of each arm.")
    calibration_text_counts: list[int] = Field([256, 1024], min_length=1, description="calibration: generic-text calibration prompts of each arm.")
    quant_group_sizes: list[int] = Field([32, 64], min_length=1, description="quantization: W4A16 group sizes (each must divide the student's layer widths); small groups degrade less.")
    quant_margin: float = Field(0.002, gt=0, description="quantization: the AUC change FP8 and W8A8 may cost and still count as lossless (absolute mean AUC).")
    quick_quant_group_sizes: list[int] = Field([32], min_length=1, description="quant_group_sizes with --quick.")
    serving_members: int = Field(20, ge=2, description="serving: test members timed per setting (the median is kept).")
    quick_serving_members: int = Field(3, ge=2, description="serving_members with --quick.")
    quick_redistill_steps: int = Field(10, ge=2, description="redistill_steps with --quick.")
    quick_calibration_counts: list[int] = Field([16, 64], min_length=2, description="calibration_counts with --quick.")
    quick_calibration_text_counts: list[int] = Field([64], min_length=1, description="calibration_text_counts with --quick.")
    quick_base: Path | None = Field(None, description="The base with --quick (empty: base).")
    quick: list[str] = Field(default_factory=list, description="Overrides added by --quick (instead of set): tiny settings, every row, a few minutes.")
    quick_seeds: list[int] = Field([0, 1], min_length=2, description="Seeds with --quick.")
    quick_prune_ratios: list[float] = Field([0.5, 0.875], min_length=1, description="prune_ratios with --quick.")
    generative: GenerativeStudy | None = Field(None, description="The generative rows' base, student and knobs (needed by the gen_* rows).")

    def for_quick(self) -> StudyConfig:
        """The study as --quick runs it: the quick base, overrides, seeds and ratios (every row kept)."""
        return self.model_copy(update={"base": self.quick_base or self.base, "set": self.quick, "seeds": self.quick_seeds,
                                       "prune_ratios": sorted(set(self.quick_prune_ratios)), "redistill_steps": self.quick_redistill_steps, "serving_members": self.quick_serving_members,
                                       "quant_group_sizes": self.quick_quant_group_sizes, "calibration_counts": self.quick_calibration_counts, "calibration_text_counts": self.quick_calibration_text_counts,
                                       "generative": self.generative.for_quick() if self.generative else None})  # fmt: skip

    def ranking_rows(self) -> list[str]:
        return [r for r in self.rows if r in RANKING_ROWS]

    def generative_rows(self) -> list[str]:
        return [r for r in self.rows if r not in RANKING_ROWS]

    @field_validator("seeds", "quick_seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        return seeds

    @field_validator("prune_ratios", "quick_prune_ratios")
    @classmethod
    def _ratios(cls, ratios: list[float]) -> list[float]:
        if any(not 0 < r < 1 for r in ratios):
            raise ValueError(f"prune_ratios must lie strictly between 0 and 1, got {ratios}")
        return sorted(set(ratios))

    @field_validator("calibration_counts", "calibration_text_counts", "quick_calibration_counts", "quick_calibration_text_counts")
    @classmethod
    def _counts(cls, counts: list[int]) -> list[int]:
        if any(c < 1 for c in counts) or len(set(counts)) != len(counts):
            raise ValueError(f"calibration counts must be distinct positive numbers of prompts, got {counts}")
        return counts

    @field_validator("redistill_steps", "quick_redistill_steps")
    @classmethod
    def _even(cls, steps: int) -> int:
        if steps % 2:
            raise ValueError(f"must be even (gradual re-trains half of them after each of its two steps), got {steps}")
        return steps

    @model_validator(mode="after")
    def _size_needs_pruning(self) -> StudyConfig:
        if "size" in self.rows and not self.prune_ratios:
            raise ValueError("rows: size reads the most pruned student; give prune_ratios")
        if self.generative_rows() and self.generative is None:
            raise ValueError(f"rows: {', '.join(self.generative_rows())} need a generative: section (its base, student and knobs)")
        return self


def load_study(path: Path) -> StudyConfig:
    """A study config from YAML; errors name the file and the field."""
    from pydantic import ValidationError

    from recslm.config import format_validation_error
    from recslm.errors import ConfigError
    from recslm.yamlfile import YamlError, load_yaml

    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{file}: study config not found")
    try:
        raw = load_yaml(file.read_text()) or {}
    except YamlError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(file))) from None
    bases = [("base", study.base), ("quick_base", study.quick_base)]
    if study.generative is not None:
        bases += [("generative.base", study.generative.base), ("generative.quick_base", study.generative.quick_base)]
    for where, base in bases:
        if base is not None and not Path(base).is_file():
            raise ConfigError(f"{file}: {where}: {base} is not a pipeline config file")
    return study


def study_with_rows(study: StudyConfig, rows: list[str], source: Path | str) -> StudyConfig:
    """``study`` restricted to ``rows`` (the CLI's --rows), validated like the config's own rows:
    an unknown row or a missing section names the file."""
    from pydantic import ValidationError

    from recslm.config import format_validation_error
    from recslm.errors import ConfigError

    try:
        return StudyConfig.model_validate({**study.model_dump(), "rows": rows})
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"{source} (--rows)")) from None
