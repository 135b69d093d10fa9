"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from api.auth.service import Role


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires", examples=[900])
    refresh_token: str = Field(description="Single use: each refresh returns the next one")
    refresh_expires_in: int = Field(examples=[1209600])


class RefreshIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=20, max_length=200)


class MeOut(BaseModel):
    username: str = Field(examples=["op-huyen"])
    role: Role
    org_unit: str = Field(examples=["iahdrai"])
    display_name: str = ""
    scope: list[str] = Field(description="Org units this account may see (its subtree)")
