"""The project's vocabulary, defined once: models, profiles, registered names, gate metrics, class names,
and the typed records that travel between the DAG tasks, the CLI and files.

Every other module (and the DAG files) imports these instead of restating them. Cheap to import: the
standard library and pydantic only (the DAG files import it at parse time).
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
    computed_field,
    field_validator,
)


class Model(StrEnum):
    """The two models this project keeps fresh."""

    classifier = "classifier"  # 3-class PubMed abstract classifier (NeMo TextClassificationModel)
    ner = "ner"  # disease tagger, IOB B/I/O (NeMo TokenClassificationModel)

    @property
    def registered_name(self) -> str:
        """The MLflow registered model name."""
        return REGISTERED_NAMES[self]

    @property
    def gate_metric(self) -> str:
        """The metric the gate decides on (classifier macro-F1, NER strict IOB2 entity F1)."""
        return GATE_METRIC[self]

    @classmethod
    def parse(cls, value: str) -> Model:
        """`classifier` / `ner`, or a registered model name; anything else is a UsageError."""
        for model in cls:
            if value in (model.value, model.registered_name):
                return model
        from tasks.errors import UsageError

        raise UsageError(f"unknown model {value!r}: expected classifier or ner")


class Profile(StrEnum):
    """Training profiles: a tiny random BERT (tests), MiniLM-L6 on CPU, production GPU (bf16)."""

    tiny = "tiny"
    cpu = "cpu"
    gpu = "gpu"

    @classmethod
    def parse(cls, value: str) -> Profile:
        try:
            return cls(value)
        except ValueError:
            from tasks.errors import UsageError

            raise UsageError(
                f"unknown profile {value!r}: expected one of {', '.join(p.value for p in cls)}"
            ) from None


class PromoteMode(StrEnum):
    """What a passed gate does to `champion` in a retraining run."""

    auto = "auto"  # champion moves when the gate passes
    approve = "approve"  # champion moves when the gate passes and a person approves (Airflow HITL task)
    never = "never"  # challenger only


class Alias(StrEnum):
    """MLflow registry aliases; moving them is the only promotion mechanism."""

    champion = "champion"
    challenger = "challenger"


class ApprovalOutcome(StrEnum):
    """How a request to approve a passed gate (promote=approve) ended."""

    approved = "approved"  # champion moves, recorded as made by the approver
    rejected = "rejected"  # challenger only; the reason is recorded
    timed_out = "timed_out"  # no answer within NCBI_RETRAIN_APPROVAL_TIMEOUT: counts as rejected


# The options of the approval task (Airflow's required actions); `ncbi-retrain approve` answers with them.
APPROVE, REJECT = "Approve", "Reject"
APPROVAL_REASON = "reason"  # the approval's one form field (free text)

MODELS: tuple[Model, ...] = tuple(Model)
PROFILES: tuple[Profile, ...] = tuple(Profile)
REGISTERED_NAMES = {Model.classifier: "ncbi-disease-classifier", Model.ner: "ncbi-disease-ner"}
GATE_METRIC = {Model.classifier: "macro_f1", Model.ner: "entity_f1"}

SPLITS = ("train", "dev", "test")
CLASS_LABELS = (0, 1, 2)
CLASS_NAMES = ("cancer", "neurological", "other")  # index = label (MeSH C04 / C10 / neither)
TAGS = ("B", "I", "O")
ENTITY_TYPE = "Disease"  # the one entity type of the NCBI corpus (seqeval wants typed tags)


def class_name(label: int | str) -> str:
    """0 -> cancer, 1 -> neurological, 2 -> other (the label itself when unknown)."""
    i = int(label)
    return CLASS_NAMES[i] if 0 <= i < len(CLASS_NAMES) else str(label)


def champion_asset_name(model: Model | str) -> str:
    """The Airflow Asset that records each new champion of `model`."""
    return f"{Model(model).registered_name}@{Alias.champion}"


def champion_asset_uri(model: Model | str) -> str:
    return f"mlflow://models/{Model(model).registered_name}/{Alias.champion}"


# ------------------------------------------------------------------------------------- records
class Record(BaseModel):
    """Base of the records passed between DAG tasks (as JSON-able dicts in XCom) and written to files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def dump(self) -> dict[str, Any]:
        """The JSON-able dict that travels in XCom."""
        return self.model_dump(mode="json")


class RunParams(Record):
    """The `ncbi_retrain` DAG run's Params form, checked: what to train and how.

    Empty strings and None both mean "the profile's default"; a bad value is one sentence naming the
    param (raised as UsageError by `from_params`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    data_revision: str | None = None
    models: Model | None = None  # None: both
    profile: Profile = Profile.cpu
    epochs: int | None = Field(None, ge=1, le=1000)
    learning_rate: float | None = Field(None, gt=0, lt=1)
    encoder: str | None = None
    max_seq_length: int | None = Field(None, ge=8, le=4096)
    promote: PromoteMode = PromoteMode.auto
    force: bool = False

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_default(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("models", mode="before")
    @classmethod
    def _both(cls, value: Any) -> Any:
        return None if value in (None, "both") else value

    @field_validator("profile", "promote", "force", mode="before")
    @classmethod
    def _none_is_default(cls, value: Any, info: Any) -> Any:
        if value is None:
            return cls.model_fields[info.field_name].default
        return value

    @classmethod
    def from_params(cls, params: Any) -> RunParams:
        """Build from the Params dict; raise UsageError naming the first bad param."""
        from pydantic import ValidationError

        from tasks.errors import UsageError

        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as exc:
            err = exc.errors()[0]
            key = ".".join(str(p) for p in err["loc"]) or "params"
            raise UsageError(
                f"param {key} is {err.get('input')!r}: {err['msg'][:1].lower()}{err['msg'][1:]}"
            ) from None

    def selected(self, model: Model | str) -> bool:
        return self.models is None or self.models == Model(model)

    def overrides(self) -> list[str]:
        """The Params as the training config's dotted overrides (empty: the profile's defaults)."""
        out = []
        if self.epochs is not None:
            out.append(f"trainer.max_epochs={self.epochs}")
        if self.learning_rate is not None:
            out.append(f"model.optim.lr={self.learning_rate:g}")
        if self.encoder is not None:
            out.append(f"model.language_model.pretrained_model_name={self.encoder}")
        if self.max_seq_length is not None:
            out.append(f"model.dataset.max_seq_length={self.max_seq_length}")
        return out


# =====================================================================================================
# metrics.json and the gate decision (docs/architecture.md): validated documents, one sentence per error
# =====================================================================================================
Score = Annotated[StrictFloat, Field(ge=0.0, le=1.0)]  # a number in [0, 1], never a bool or a string
Count = Annotated[StrictInt, Field(ge=0)]


class Document(BaseModel):
    """A JSON document on disk: unknown keys are kept, so newer writers can add fields."""

    model_config = ConfigDict(
        extra="allow", validate_by_alias=True, validate_by_name=True, serialize_by_alias=True
    )


class ClassifierItem(Document):
    """One test abstract: its PMID, gold and predicted class."""

    id: str | int
    gold: StrictInt
    pred: StrictInt


class NerItem(Document):
    """One test sentence (its line index): strict IOB2 entity counts."""

    id: str | int
    tp: Count
    fp: Count
    fn: Count


class BehaviourRow(Document):
    """One sentence of tasks/behaviour.yaml as the model saw it."""

    text: str
    expected: Any = None
    predicted: Any = None
    passed: bool | None = None


class ClassifierScores(Document):
    """`metrics` of a classifier metrics.json (more keys: accuracy, per_class, confusion_matrix, ...)."""

    macro_f1: Score
    labels: list[int] | None = None


class NerScores(Document):
    """`metrics` of an NER metrics.json (more keys: entity_precision, entity_recall, token_*, ...)."""

    entity_f1: Score


class _MetricsDocument(Document):
    schema_version: int = Field(1, alias="schema")
    split: str = "test"
    data_version: str | None = None  # md5 from data.dvc
    model: str | None = None  # the path or models:/ URI that was scored
    behaviour: list[BehaviourRow] = Field(default_factory=list)


class ClassifierMetricsDocument(_MetricsDocument):
    """A classifier's metrics.json: one item per test abstract, in split order."""

    task: Literal[Model.classifier]
    gate_metric: Literal[GATE_METRIC[Model.classifier]] = GATE_METRIC[Model.classifier]
    metrics: ClassifierScores
    items: list[ClassifierItem]


class NerMetricsDocument(_MetricsDocument):
    """The tagger's metrics.json: one item per test sentence, in split order."""

    task: Literal[Model.ner]
    gate_metric: Literal[GATE_METRIC[Model.ner]] = GATE_METRIC[Model.ner]
    metrics: NerScores
    items: list[NerItem]


MetricsDocument = ClassifierMetricsDocument | NerMetricsDocument


@cache
def _metrics_adapter() -> TypeAdapter:
    return TypeAdapter(Annotated[MetricsDocument, Field(discriminator="task")])


def parse_metrics(doc: Any, source: str = "metrics") -> MetricsDocument:
    """Validate a metrics.json document; a bad one is a DataError naming `source` and the field."""
    from tasks.errors import DataError

    if isinstance(doc, ClassifierMetricsDocument | NerMetricsDocument):
        return doc
    try:
        return _metrics_adapter().validate_python(doc)
    except ValidationError as exc:
        raise DataError(f"{source}: {field_error(exc)}") from None


class GateCheck(BaseModel):
    """One check of a gate decision, with the numbers behind it."""

    model_config = ConfigDict(frozen=True)

    name: str  # floor | bootstrap_non_inferior | bootstrap_superior | per_class_f1 | behaviour
    passed: bool
    numbers: dict[str, Any] = Field(default_factory=dict)
    detail: str = ""


class GateDecision(BaseModel):
    """A gate decision (`decision.json`): `passed`, a one-sentence `reason`, every check and its numbers."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, validate_by_alias=True, validate_by_name=True, serialize_by_alias=True
    )

    schema_version: int = Field(1, alias="schema")
    model: Model
    profile: Profile
    passed: bool
    reason: str
    checks: list[GateCheck]
    metric: str
    candidate_value: float
    champion_value: float | None = None
    data_version: str | None = None
    candidate_model: str | None = None
    champion_model: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)
    decided_at: str = ""
    # Plot inputs, kept so that a report can be rebuilt from the JSON alone.
    labels: list[int] = Field(default_factory=list)
    confusion_matrix: list[list[int]] | None = None
    per_class_f1: dict[str, dict[str, float | None]] = Field(default_factory=dict)
    bootstrap_diffs: list[float] = Field(default_factory=list, repr=False)
    # The data drift from the champion's data version to the candidate's (`tasks.drift`), when known.
    drift: dict[str, Any] | None = Field(None, repr=False)

    @computed_field
    @property
    def gate(self) -> Literal["passed", "failed"]:
        """The registry tag value."""
        return "passed" if self.passed else "failed"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (`gate` and `schema` included)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, doc: Any, source: str = "decision") -> GateDecision:
        """Validate a decision document; a bad one is a DataError naming `source` and the field."""
        from tasks.errors import DataError

        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            raise DataError(f"{source}: {field_error(exc)}") from None


def field_error(exc: ValidationError) -> str:
    """The first error of a pydantic ValidationError as `field items[3].gold must be ..., got ...`."""
    err = exc.errors(include_url=False)[0]
    loc = list(err["loc"])
    if loc and loc[0] in MODELS:  # the tag of a discriminated union, not a field
        loc = loc[1:]
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(root)"
    kind, msg, got = err["type"], err["msg"], err.get("input")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        task = got.get("task") if isinstance(got, dict) else None
        return f"field task must be {' or '.join(MODELS)}, got {task!r}"
    if kind == "missing":
        return f"field {path} is missing"
    if kind == "extra_forbidden":
        return f"field {path} is not a known field"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"field {path} must be an object, got {type(got).__name__}"
    msg = msg.removeprefix("Value error, ")
    msg = f"must be {msg.removeprefix('Input should be ')}" if msg.startswith("Input should be ") else msg
    shown = repr(got)
    return f"field {path} {msg}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"


# =============================================================================== DAG task records
# What each DAG task returns as XCom (`record.dump()`) and the next task reads back with
# `Record.model_validate(...)`: one typed contract per hand-over. Paths travel as strings (JSON).
class DataRef(Record):
    """`pull_data`: the run's materialised, read-only data folder and its version (the md5 in data.dvc)."""

    data_dir: str
    data_version: str
    revision: str | None = None  # the git revision asked for (HEAD when none)
    commit: str | None = None  # the commit it resolved to: the data's lineage in git


class ValidationResult(Record):
    """`validate_data`: a passed validation (a failed one stops the run) and where its report is."""

    valid: bool
    summary: str
    report: str
    drift: str | None = None  # drift.json against the champions' (or the previous) data version


class JobSpec(Record):
    """One `ncbi-retrain` command in the training env: what every launcher's operator runs.

    `env` holds no secret (it travels in XCom and shows in the UI): credentials reach the job from the
    worker's own environment (local, docker) or a Kubernetes Secret.
    """

    name: str  # e.g. train-classifier: container label, pod name, log prefix
    argv: list[str]  # the arguments after `ncbi-retrain`
    env: dict[str, str] = Field(default_factory=dict)
    out_dir: str | None = None  # set: `--out <out_dir>/try-<try number>` is appended (one folder per try)

    def try_dir(self, try_number: int) -> str | None:
        """The output folder of one try (a retry never reuses a failed try's folder or MLflow run)."""
        return None if self.out_dir is None else f"{self.out_dir}/try-{int(try_number)}"

    def argv_for(self, try_number: int) -> list[str]:
        """The full argv of one try of the operator running this job."""
        out = self.try_dir(try_number)
        return list(self.argv) if out is None else [*self.argv, "--out", out]


class Plan(Record):
    """`plan`: train this model in this run or not (`reason` says why), and the job when it trains."""

    model: Model
    train: bool
    reason: str
    config_fingerprint: str
    git_commit: str
    job: JobSpec | None = None


class TrainResult(Record):
    """The `train --json` line (the XCom of every launcher's training operator), as the next tasks use it."""

    model_config = ConfigDict(extra="ignore", frozen=True)  # the CLI may add fields

    run_id: str
    model_uri: str | None = None
    metrics: dict[str, float] = Field(default_factory=dict)  # flat test metrics (test_macro_f1, ...)
    artifacts: dict[str, str] = Field(default_factory=dict)  # nemo, metrics, predictions, config, ...
    data_version: str | None = None
    config_fingerprint: str | None = None
    git_commit: str | None = None
    fit_seconds: float | None = None

    @property
    def metrics_file(self) -> str:
        """The test split's metrics.json (the gate's candidate)."""
        return self.artifacts["metrics"]


class EvaluateResult(Record):
    """The `evaluate --json` line: where the metrics file is and the gate metric's value."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    metrics_path: str
    gate_metric: str


class ChampionRef(Record):
    """`champion`: the current champion's metrics on this run's data, recorded or to be re-scored.

    `metrics` is set when the recorded metrics.json is on this data version (reused); otherwise `job`
    re-scores the champion (`evaluate --model models:/NAME@champion`). No champion: both are None.
    """

    model: Model
    version: str | None
    reason: str
    metrics: str | None = None
    job: JobSpec | None = None


class GateResult(Record):
    """`gate`: the decision in short; the full one is the JSON file at `decision`."""

    passed: bool
    gate: str  # passed / failed
    reason: str
    decision: str
    metric: str
    value: float
    champion_value: float | None = None


class Registration(Record):
    """`register`: the model version this run's training became (alias `challenger`)."""

    name: str
    version: str
    gate: str


class ApprovalRequest(Record):
    """`approval_request`: whether this model's passed gate waits for a person (promote=approve), and
    what the approval task shows them (`subject`, Markdown `body`); `reason` says why (not)."""

    needed: bool
    reason: str
    name: str | None = None
    version: str | None = None
    subject: str = ""
    body: str = ""


class Approval(Record):
    """A person's answer to an approval request, or its timeout (the approval task's XCom, read back)."""

    outcome: ApprovalOutcome
    by: str | None = None  # the Airflow user who answered (None: timed out)
    reason: str | None = None
    at: str | None = None  # when it was answered or timed out (ISO 8601, UTC)

    @classmethod
    def from_response(cls, response: Any) -> Approval | None:
        """From the provider's HITL result ({chosen_options, params_input, responded_at,
        responded_by_user}); None when the approval task did not run. A Reject nobody chose (no
        responding user) is the timeout's default."""
        if not response:
            return None
        chosen = list(response.get("chosen_options") or [])
        user = response.get("responded_by_user") or None
        by = (user.get("name") or user.get("id")) if isinstance(user, dict) else None
        reason = ((response.get("params_input") or {}).get(APPROVAL_REASON) or "").strip() or None
        at = response.get("responded_at")
        at = at.isoformat(timespec="seconds") if hasattr(at, "isoformat") else (str(at) if at else None)
        if chosen == [APPROVE]:
            outcome = ApprovalOutcome.approved
        elif by is None:
            outcome = ApprovalOutcome.timed_out
        else:
            outcome = ApprovalOutcome.rejected
        return cls(outcome=outcome, by=by, reason=reason, at=at)

    def describe(self) -> str:
        """`approved by alice: reason`, `rejected by bob: reason`, `timed out at T (counts as rejected)`."""
        why = f": {self.reason}" if self.reason else " (no reason given)"
        if self.outcome == ApprovalOutcome.timed_out:
            return f"not approved in time (timed out at {self.at or 'unknown'}; counts as rejected)"
        return f"{self.outcome.value} by {self.by}{why}"

    def short(self) -> str:
        """`approved by alice` / `rejected by bob` / `timed out` (the demo's table)."""
        if self.outcome == ApprovalOutcome.timed_out:
            return "timed out"
        return f"{self.outcome.value} by {self.by}"


class Promotion(Record):
    """`promote`: whether `champion` moved to the new version, and why (not)."""

    promoted: bool
    name: str
    version: str
    reason: str
    approval: Approval | None = None  # promote=approve: the answer it acted on


class ModelSummary(Record):
    """One model's line of the run summary."""

    trained: bool
    reason: str | None = None
    plan: str | None = None
    run_id: str | None = None
    metric: str | None = None
    value: float | None = None
    champion_value: float | None = None
    gate: str | None = None
    gate_reason: str | None = None
    version: str | None = None
    promoted: bool = False
    approval: Approval | None = None  # promote=approve: approved / rejected (by whom, why) / timed out


class RunSummary(Record):
    """`summarize`: the run's outcome per model (also written to `<run dir>/summary.json`)."""

    dag_run_id: str
    started_at: str | None = None  # the DAG run's start (Airflow's dag_run.start_date)
    finished_at: str
    data_version: str | None = None
    models: dict[str, ModelSummary]
    path: str | None = None


class ChampionMove(Record):
    """`ncbi_promote`: a manual promotion or rollback of `champion` (versions before and after)."""

    name: str
    before: str | None
    after: str | None
    reason: str
