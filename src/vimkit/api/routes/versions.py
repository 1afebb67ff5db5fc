"""``api_versions`` resources of all nine API roots (rest-binding.md §1.1); unauthenticated."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from vimkit import API_VERSION
from vimkit.api.problems import PROBLEM_RESPONSES
from vimkit.api.routing import VimRoute
from vimkit.auth.scopes import API_SCOPES


class ApiVersion(BaseModel):
    version: str
    isDeprecated: bool | None = None
    retirementDate: str | None = None


class ApiVersionInformation(BaseModel):
    uriPrefix: str
    apiVersions: list[ApiVersion]


def build_router() -> APIRouter:
    router = APIRouter(route_class=VimRoute, responses={code: PROBLEM_RESPONSES[code] for code in (400, 405, 406)})
    for api_name in API_SCOPES:

        def versions(request: Request, _api: str = api_name) -> ApiVersionInformation:
            prefix = str(request.base_url).rstrip("/") + f"/{_api}/v1"
            return ApiVersionInformation(uriPrefix=prefix, apiVersions=[ApiVersion(version=API_VERSION)])

        for path in (f"/{api_name}/api_versions", f"/{api_name}/v1/api_versions"):
            router.add_api_route(
                path,
                versions,
                methods=["GET"],
                tags=[api_name],
                summary=f"API versions of the {api_name} API",
                operation_id=f"{api_name}_{'v1_' if '/v1/' in path else ''}api_versions".replace("-", "_"),
                response_model=ApiVersionInformation,
                response_model_exclude_none=True,
            )
    return router
