"""Request and response models of the HTTP API, with the examples shown in the OpenAPI schema."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.limits import MAX_SAMPLES, MAX_SCALE, MAX_TEXT, SEED_LIMIT, DigitText, check_text

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
OutputFormat = Literal["png", "json"]
VERSION_DESCRIPTION = "Model version, e.g. v0003 (default: the active version)."


class GenerateRequest(BaseModel):
    """POST /generate: write `text` in handwriting."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "2026", "samples": 2, "seed": 42, "temperature": 0.8, "scale": 2},
                {"text": "42", "style": [0.1, -0.3, 0.0, 1.2], "invert": True},
            ]
        },
    )

    text: DigitText = Field(
        min_length=1,
        max_length=MAX_TEXT,
        description="1-32 ASCII digits 0-9 and spaces (a space is a blank tile), at least one digit.",
        # Documented for clients and API fuzzers; enforced by `check_text`, whose message is clearer.
        json_schema_extra={"pattern": "^[0-9 ]*[0-9][0-9 ]*$"},
    )
    samples: int = Field(
        1, ge=1, le=MAX_SAMPLES, description="Rows, each an independent rendering of the text."
    )
    seed: int | None = Field(
        None, ge=0, lt=SEED_LIMIT, description="Same seed + parameters + version = byte-identical PNG."
    )
    temperature: float | None = Field(
        None,
        ge=0,
        le=2,
        allow_inf_nan=False,
        description="Prior noise scale, z = temperature * eps; 0 = mean style. Default: the server's "
        "CVAE_DEFAULT_TEMPERATURE if set, else the model version's measured default_temperature (else 1.0).",
    )
    style: list[FiniteFloat] | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="latent_dim finite floats (e.g. `mu` from /encode): every tile uses z = style.",
    )
    scale: int = Field(1, ge=1, le=MAX_SCALE, description="Nearest-neighbour upscale factor.")
    invert: bool = Field(False, description="Black ink on white.")

    @field_validator("text")
    @classmethod
    def _ascii_digits(cls, value: str) -> DigitText:
        return check_text(value)


class InferenceMetrics(BaseModel):
    """Where the time went; batch_size = requests that shared the forward pass."""

    inference_ms: float
    queue_ms: float
    compute_ms: float
    batch_size: int


class GenerateResponse(BaseModel):
    """POST /generate?format=json."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_version": "v0001",
                    "seed": 42,
                    "temperature": 0.8,
                    "width": 56,
                    "height": 28,
                    "image_png_base64": "iVBORw0KGgo...",
                    "metrics": {"inference_ms": 1.9, "queue_ms": 0.4, "compute_ms": 0.3, "batch_size": 3},
                }
            ]
        },
    )

    model_version: str
    seed: int
    temperature: float
    width: int
    height: int
    image_png_base64: str
    metrics: InferenceMetrics


class EncodeMetrics(InferenceMetrics):
    """ELBO terms in nats (elbo = -(recon_bce + kl)) and the reconstruction's mean squared error."""

    elbo: float
    recon_bce: float
    kl: float
    mse: float


class EncodeResponse(BaseModel):
    """POST /encode."""

    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={
            "examples": [
                {
                    "model_version": "v0001",
                    "label": 7,
                    "label_source": "inferred",
                    "label_probs": [0, 0, 0, 0.01, 0, 0, 0, 0.98, 0, 0.01],
                    "latent_dim": 4,
                    "mu": [0.12, -1.3, 0.4, 0.9],
                    "log_var": [-3.1, -2.8, -3.3, -2.9],
                    "metrics": {
                        "elbo": -92.4,
                        "recon_bce": 80.1,
                        "kl": 12.3,
                        "mse": 0.012,
                        "inference_ms": 2.1,
                        "queue_ms": 0.3,
                        "compute_ms": 0.6,
                        "batch_size": 1,
                    },
                }
            ]
        },
    )

    model_version: str
    label: int
    label_source: Literal["given", "inferred"]
    label_probs: list[float]
    latent_dim: int
    mu: list[float]
    log_var: list[float]
    metrics: EncodeMetrics


class ReconstructResponse(BaseModel):
    """POST /reconstruct?format=json."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    label: int
    label_source: Literal["given", "inferred"]
    label_probs: list[float]
    width: int
    height: int
    image_png_base64: str
    input_png_base64: str
    metrics: EncodeMetrics


class ModelVersion(BaseModel):
    """One registry version as listed by GET /v1/models."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    active: bool
    loaded: bool
    latent_dim: int | None = Field(
        None, description="Size of z: the length of `style` in /generate and of `mu` from /encode."
    )
    default_temperature: float | None = Field(
        None,
        description="The version's measured default temperature: what /generate uses when the request "
        "gives none and CVAE_DEFAULT_TEMPERATURE is unset.",
    )
    metadata: dict[str, Any] | None
    error: str | None = None


class ModelsResponse(BaseModel):
    """GET /v1/models."""

    active: str | None
    serving: str | None
    loaded: list[str]
    device: str
    total: int = 0  # versions in the registry; `versions` is one page of them
    versions: list[ModelVersion]


class HealthResponse(BaseModel):
    """GET /healthz."""

    status: Literal["ok"]


class ReadyResponse(BaseModel):
    """GET /readyz when a model is loaded."""

    model_config = ConfigDict(protected_namespaces=())

    status: Literal["ready"]
    model_version: str
    device: str


class AdminResponse(BaseModel):
    """POST /admin/models/{version}/load|promote."""

    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    active: str | None
    loaded: list[str]


class ValidationIssue(BaseModel):
    """One invalid field: where (`loc`), what is wrong (`msg`) and the pydantic error type."""

    loc: list[str | int]
    msg: str
    type: str


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: a `detail` a person can act on and the request id to quote."""

    detail: str | list[ValidationIssue]
    request_id: str


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses."""
    text = {
        400: "Body that cannot be parsed (not UTF-8 JSON, malformed multipart, over 1000 parts)",
        401: "Missing or wrong admin token",
        404: "Unknown model version",
        408: "The body did not arrive within the body timeout",
        409: "This replica cannot write the registry (a read-only mount)",
        413: "Body or image too large",
        415: "Not a supported image",
        422: "Invalid field, unreadable or blank image",
        503: "Not ready, overloaded or timed out (see Retry-After)",
    }
    return {s: {"model": ErrorResponse, "description": text.get(s, "Error")} for s in statuses}
