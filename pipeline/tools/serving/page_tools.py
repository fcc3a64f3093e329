"""The run's own tools for the chat page: what the terminal chat runs (pipeline/tools/chat_tools.py), one episode
per page conversation, behind two routes under /v1 (the API key holds for them too).

    GET  /v1/tools?conversation=ID          {tools: [schemas], max_calls, observation}  (tools [] when off)
    POST /v1/tools/call {conversation, name, arguments}   {content: the result, or TRL's {'error': ...} text}

The page (pipeline/assets/webchat.html) offers the schemas with each chat request, runs every call the model makes
through POST /v1/tools/call and sends the results back as role=tool turns, up to max_calls calls per user turn, as
`answer()` does in the terminal. An environment's reset() text (`observation`) joins the conversation's first
message. Conversations are kept by the id the page makes (a new one on Clear); the oldest beyond KEEP are dropped.
Off unless asked for (serve tools=on; chat web=true has them on, tools=off turns them off): a tool may run code.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from pipeline.envs.registry import Agent
from pipeline.tools.chat_tools import ChatTools, chat_tools

# conversations kept at once (each holds one environment instance)
KEEP = 64


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conversation: str
    name: str
    arguments: dict[str, Any] = {}


class PageTools:
    """One ChatTools per page conversation, all from the run's one agent."""

    def __init__(self, agent: Agent, max_calls: int, environment: str | None = None) -> None:
        self.agent, self.max_calls, self.environment = agent, max_calls, environment
        self.names = list(chat_tools(agent, max_calls, environment).functions)  # a bad environment= fails at start
        self._sessions: OrderedDict[str, ChatTools] = OrderedDict()
        self._lock = threading.Lock()

    def session(self, conversation: str) -> ChatTools:
        with self._lock:
            tools = self._sessions.get(conversation)
            if tools is None:
                tools = self._sessions[conversation] = chat_tools(self.agent, self.max_calls, self.environment)
                while len(self._sessions) > KEEP:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(conversation)
            return tools


def page_tools_of(run_dir: Any, tokenizer: Any, max_calls: int | None = None, environment: str | None = None
                  ) -> PageTools | None:
    """The run's tools for the page, or None when the run had none (an export: no config, no tools)."""
    from pipeline.tools.chat_tools import run_agent

    found = run_agent(run_dir, tokenizer)
    if found is None:
        return None
    agent, calls = found
    return PageTools(agent, max_calls if max_calls is not None else calls, environment)


def add_tool_routes(v1: APIRouter, page_tools: PageTools | None) -> None:
    @v1.get("/tools")
    def tools(conversation: str = "") -> dict[str, Any]:
        if page_tools is None or not conversation:
            return {"tools": [], "max_calls": 0, "observation": None}
        session = page_tools.session(conversation)
        return {"tools": session.schemas, "max_calls": session.max_calls, "observation": session.observation}

    @v1.post("/tools/call")
    def call(body: ToolCall) -> dict[str, str]:
        if page_tools is None:
            raise HTTPException(404, "this server runs no tools. Fix: start it with tools=on (serve), or chat "
                                "web=true without tools=off")
        # a sync route: FastAPI runs it in a worker thread, so a slow tool (up to env.timeout_s) blocks no stream
        return {"content": page_tools.session(body.conversation).call(body.name, body.arguments)}
