"""Ids are accepted in their canonical form only."""

from __future__ import annotations

import grpc
import pytest

from taskgate.v1 import user_service_pb2 as user_pb
from tests.support.clients import Client, bearer

pytestmark = pytest.mark.usefixtures("app")

NON_CANONICAL = {
    "urn": "urn:uuid:{id}",
    "braces": "{{{id}}}",
    "hyphens-first": "----{hex}",
    "hyphens-moved": "{hex8}{hex4a}-{hex4b}-{hex4c}-{hex4d}-{hex12}",
    "no-hyphens": "{hex}",
    "trailing-newline": "{id}\n",
}


@pytest.mark.parametrize("form", NON_CANONICAL)
async def test_a_non_canonical_form_of_the_callers_own_id_is_invalid(
    channel: grpc.aio.Channel, form: str
) -> None:
    client = Client(channel)
    user, token = await client.register_and_login()
    hex_ = user.user_id.replace("-", "")
    value = NON_CANONICAL[form].format(
        id=user.user_id,
        hex=hex_,
        hex8=hex_[:8],
        hex4a=hex_[8:12],
        hex4b=hex_[12:16],
        hex4c=hex_[16:20],
        hex4d=hex_[20:24],
        hex12=hex_[24:],
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await client.users.GetUser(user_pb.GetUserRequest(user_id=value), metadata=bearer(token))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, value


async def test_the_canonical_form_in_either_case_is_accepted(channel: grpc.aio.Channel) -> None:
    client = Client(channel)
    user, token = await client.register_and_login()
    for value in (user.user_id, user.user_id.upper()):
        got = await client.users.GetUser(
            user_pb.GetUserRequest(user_id=value), metadata=bearer(token)
        )
        assert got.user == user
