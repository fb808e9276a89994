"""Models: the chat contract, LiteLLM, and recorded (cassette) models."""

from mesh.models.base import ChatMessage, Model, ModelResponse, TokenUsage, ToolCall
from mesh.models.images import Image
from mesh.models.litellm_model import DEFAULT_MODEL_ID, LiteLLMModel, RetryPolicy
from mesh.models.replay import Cassette, RecordingModel, ReplayModel
from mesh.models.replay_server import ReplayServer
from mesh.models.wrappers import CachingModel, RateLimitedModel

__all__ = [
    "DEFAULT_MODEL_ID",
    "CachingModel",
    "Cassette",
    "ChatMessage",
    "Image",
    "LiteLLMModel",
    "Model",
    "ModelResponse",
    "RateLimitedModel",
    "RecordingModel",
    "ReplayModel",
    "ReplayServer",
    "RetryPolicy",
    "TokenUsage",
    "ToolCall",
]
