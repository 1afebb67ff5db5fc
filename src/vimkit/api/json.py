"""Fast JSON encoding shared by responses, problem details and stored documents."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


class FastJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content)
