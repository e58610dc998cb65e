"""One settings object for the whole system, read from the environment.

Every field can be set with a ``MASKFACTORY_``-prefixed variable (``MASKFACTORY_STORAGE_ROOT``, ...).
S3 credentials also come from the standard AWS variables, so a machine already configured for the
AWS CLI needs nothing more; an explicit ``MASKFACTORY_S3_*`` variable wins over the AWS one.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Storage, S3 endpoint and credentials, device and model URIs."""

    # populate_by_name: Settings(s3_endpoint_url=...) works in code as well as the aliased variables.
    model_config = SettingsConfigDict(env_prefix="MASKFACTORY_", extra="ignore", populate_by_name=True)

    storage_root: str = Field(
        default="./maskfactory-data",
        description="Where tables and checkpoints go: a local path, file:// or s3:// URI.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "MASKFACTORY_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"
        ),
        description="S3 endpoint (MinIO, moto, a VPC endpoint); None means AWS itself.",
    )
    aws_access_key_id: str | None = Field(
        default=None, validation_alias=AliasChoices("MASKFACTORY_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
    )
    aws_secret_access_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MASKFACTORY_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    )
    aws_session_token: str | None = Field(
        default=None, validation_alias=AliasChoices("MASKFACTORY_S3_SESSION_TOKEN", "AWS_SESSION_TOKEN")
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("MASKFACTORY_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    )
    device: str = Field(
        default="auto", description="torch device: 'auto' (cuda if present), 'cpu', 'cuda:0'."
    )
    sam_model: str = Field(default="tiny-sam", description="Registry name of the SAM model.")
    sam_checkpoint: str | None = Field(
        default=None, description="URI of the SAM weights; None: registry default."
    )
    clip_model: str = Field(default="tiny-clip", description="Registry name of the CLIP model.")
    clip_checkpoint: str | None = Field(
        default=None, description="URI of the CLIP weights; None: registry default."
    )

    def torch_device(self) -> str:
        """Resolve ``device`` to a concrete torch device string."""
        if self.device != "auto":
            return self.device
        import torch  # local: settings must stay importable without loading torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def get_settings() -> Settings:
    """Settings from the current environment.

    Not cached on purpose: it is cheap, and a process (or a test) that changes the environment
    should see the change. Hot paths take a ``Settings`` argument instead of calling this per item.
    """
    return Settings()
