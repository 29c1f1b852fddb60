"""A loopback stand-in for Twilio: signed webhooks, a ConversationRelay client, a REST API.

Signatures come from the official `twilio` package's `RequestValidator`, so the server's own
implementation is checked against Twilio's, not against itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect

from voxline.server.runner import build_server

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC = "https://voice.example.test"
ACCOUNT = "AC00000000000000000000000000000000"
WAIT = 10.0  # seconds any one expected event may take before a test fails


@contextlib.asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    """Serve `app` on a real loopback port until the block ends: voxline apps through the
    production runner (graceful drain included), anything else on plain uvicorn."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server: uvicorn.Server
    if hasattr(app.state, "hub"):
        server = build_server(app, host="127.0.0.1", port=port, log_level="warning")
    else:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await task
        sock.close()


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    """Poll until `check` holds (server-side work finishes after the client is done)."""
    async with asyncio.timeout(WAIT):
        while True:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)


@dataclass
class Twilio:
    """Plays Twilio's part against a server at `base`, which believes it lives at `PUBLIC`."""

    base: str
    public: str = PUBLIC
    token: str = TOKEN

    def sign(self, url: str, params: dict[str, str] | None = None) -> str:
        return str(RequestValidator(self.token).compute_signature(url, params or {}))

    async def post(
        self, path: str, params: dict[str, str], *, signature: str | None = None
    ) -> httpx.Response:
        if signature is None:
            signature = self.sign(self.public + path, params)
        headers = {"X-Twilio-Signature": signature} if signature else {}
        async with httpx.AsyncClient(base_url=self.base, timeout=30) as client:
            return await client.post(path, data=params, headers=headers)

    async def call(
        self, caller: str = "+14155550100", *, agent: str = "", call_sid: str | None = None
    ) -> ET.Element:
        """The voice webhook for an inbound call; returns the TwiML `<Response>`."""
        path = f"/twilio/voice/{agent}" if agent else "/twilio/voice"
        params = voice_params(caller)
        if call_sid is not None:
            params["CallSid"] = call_sid
        response = await self.post(path, params)
        assert response.status_code == 200, response.text
        twiml = ET.fromstring(response.text)
        assert twiml.find("./Connect/ConversationRelay") is not None, response.text
        return twiml

    async def text(self, body: str, sender: str = "+14155550100", *, agent: str = "") -> list[str]:
        path = f"/twilio/sms/{agent}" if agent else "/twilio/sms"
        response = await self.post(path, sms_params(body, sender))
        assert response.status_code == 200, response.text
        return [m.text or "" for m in ET.fromstring(response.text).findall("Message")]

    @contextlib.asynccontextmanager
    async def relay(
        self, twiml: ET.Element, *, signature: str | None = None, setup: bool = True, **fields: Any
    ) -> AsyncIterator[RelayClient]:
        """Open the ConversationRelay socket the TwiML names, as Twilio would."""
        relay = twiml.find("./Connect/ConversationRelay")
        assert relay is not None
        url = relay.attrib["url"]
        assert url.startswith(self.public.replace("https://", "wss://"))
        local = self.base.replace("http://", "ws://") + url.split(".test", 1)[1]
        if signature is None:
            signature = self.sign(url)
        async with connect(
            local, additional_headers={"X-Twilio-Signature": signature}, max_size=None
        ) as ws:
            client = RelayClient(ws)
            if setup:
                params = {p.attrib["name"]: p.attrib["value"] for p in relay.findall("Parameter")}
                await client.send(setup_message(params, **fields))
            yield client


class RelayClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def prompt(self, text: str, *, last: bool = True) -> None:
        await self.send({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": last})

    async def next(self) -> dict[str, Any]:
        async with asyncio.timeout(WAIT):
            message: dict[str, Any] = json.loads(await self.ws.recv())
        self.received.append(message)
        return message

    async def reply(self) -> str:
        """Tokens up to the `last: true` that closes the talk cycle, joined."""
        tokens: list[str] = []
        while True:
            message = await self.next()
            assert message["type"] == "text", message
            tokens.append(message["token"])
            if message["last"]:
                return "".join(tokens)


def voice_params(caller: str, callee: str = "+18005550101") -> dict[str, str]:
    return {
        "CallSid": "CA" + "1" * 32,
        "AccountSid": ACCOUNT,
        "From": caller,
        "To": callee,
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
        "Caller": caller,
        "Called": callee,
        "FromCountry": "US",
    }


def sms_params(body: str, sender: str, to: str = "+18005550101") -> dict[str, str]:
    return {
        "MessageSid": "SM" + "2" * 32,
        "SmsSid": "SM" + "2" * 32,
        "AccountSid": ACCOUNT,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }


def setup_message(params: dict[str, str], **fields: Any) -> dict[str, Any]:
    message = {
        "type": "setup",
        "sessionId": "VX" + "0" * 32,
        "accountSid": ACCOUNT,
        "parentCallSid": "",
        "callSid": "CA" + "1" * 32,
        "from": "+14155550100",
        "to": "+18005550101",
        "forwardedFrom": "",
        "callType": "PSTN",
        "callerName": "",
        "direction": "inbound",
        "callStatus": "RINGING",
        "customParameters": params,
    }
    message.update(fields)
    return message


@dataclass
class RestStandIn:
    """Twilio's Messages API on loopback: records what the server sends."""

    messages: list[dict[str, str]] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> Starlette:
        async def create(request: Request) -> JSONResponse:
            form = await request.form()
            self.messages.append({k: str(v) for k, v in form.items()})
            self.auth.append(request.headers.get("authorization", ""))
            self.arrived.set()
            sid = request.path_params["sid"]
            return JSONResponse({"sid": "SM" + "9" * 32, "account_sid": sid}, status_code=201)

        route = Route("/2010-04-01/Accounts/{sid}/Messages.json", create, methods=["POST"])
        return Starlette(routes=[route])

    async def wait(self, count: int = 1) -> list[dict[str, str]]:
        await eventually(lambda: len(self.messages) >= count)
        return self.messages
