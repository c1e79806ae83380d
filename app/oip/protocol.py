"""The JSON objects of the Open Inference Protocol (HTTP/REST), as pydantic models.

They validate inference requests (the route parses the body itself, because with the binary tensor
data extension the JSON header is followed by raw bytes) and document every /v2 answer in OpenAPI.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ParameterValue = bool | int | float | str
Parameters = dict[str, ParameterValue]
Dimension = Annotated[int, Field(ge=-1)]


class RequestInput(BaseModel):
    """One input tensor: JSON `data` (flat or nested, row-major), or `binary_data_size` bytes of the body."""

    name: str = Field(min_length=1, max_length=64)
    shape: list[Annotated[int, Field(ge=0)]] = Field(max_length=8)
    datatype: str = Field(min_length=1, max_length=16)
    parameters: Parameters | None = None
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    """An output the client wants; `parameters.binary_data` asks for it as binary data."""

    name: str = Field(min_length=1, max_length=64)
    parameters: Parameters | None = None


class InferenceRequest(BaseModel):
    """POST /v2/models/{name}[/versions/{version}]/infer (the JSON part of the body)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "example-1",
                    "inputs": [
                        {"name": "labels", "shape": [2], "datatype": "INT64", "data": [4, 2]},
                        {"name": "seed", "shape": [2], "datatype": "INT64", "data": [7, 7]},
                    ],
                    "outputs": [{"name": "pixels"}],
                }
            ]
        }
    )

    id: str | None = Field(None, max_length=256)
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=16)
    outputs: list[RequestOutput] | None = Field(None, max_length=16)


class ResponseOutput(BaseModel):
    """One output tensor: JSON `data` (flat, row-major) or `parameters.binary_data_size` bytes after it."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    """The answer of an inference request (the JSON part, when outputs are binary)."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class TensorMetadata(BaseModel):
    """An input or output of a model: -1 is a dimension of any size (the first one is the row)."""

    name: str
    datatype: str
    shape: list[Dimension]


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}[/versions/{version}]."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


class ServerMetadata(BaseModel):
    """GET /v2."""

    name: str
    version: str
    extensions: list[str]


class RepositoryIndexRequest(BaseModel):
    """POST /v2/repository/index: `ready: true` lists only the model versions ready now."""

    ready: bool = False


class RepositoryModel(BaseModel):
    """One model version of the repository index."""

    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE"]
    reason: str


class ErrorBody(BaseModel):
    """Every /v2 refusal: the protocol's error object."""

    error: str
