"""LangChain tools and LangGraph interrupts, driven by LangChain's fake chat model and a real
LangGraph graph with a checkpointer; approvals answered on the live server."""

from __future__ import annotations

from typing import TypedDict

from awaithuman_sdk import AsyncAwaitHuman, AwaitHuman
from awaithuman_sdk.langchain import (
    approval_interrupt,
    approval_tool,
    arun_with_approvals,
    ask_human_tool,
    run_with_approvals,
)
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from tests.sdk.conftest import Background


@tool
def issue_refund(order: int, amount: int) -> str:
    """Refund `amount` dollars on `order`."""
    return f"Refunded ${amount} on order {order}."


def agent_loop(model: GenericFakeChatModel, tools: list, question: str) -> list:
    """The smallest tool-calling loop: call the model, run its tool calls, until it answers."""
    by_name = {each.name: each for each in tools}
    messages = [HumanMessage(question)]
    while True:
        reply = model.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            messages.append(by_name[call["name"]].invoke(call))


def test_an_approval_tool_keeps_the_tools_schema_and_asks_first(live, operator, run_id):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    gated = approval_tool(
        issue_refund,
        client,
        when=lambda args: args["amount"] > 500,
        title=lambda name, args: f"{name} {run_id}",
    )
    assert gated.name == "issue_refund"
    assert gated.description == issue_refund.description
    assert set(gated.args) == {"order", "amount"}

    model = GenericFakeChatModel(
        messages=iter(
            [
                AIMessage(
                    content="",
                    tool_calls=[
                        {
                            "name": "issue_refund",
                            "args": {"order": 1042, "amount": 750},
                            "id": run_id,
                        }
                    ],
                ),
                AIMessage(content="Done: refunded."),
            ]
        )
    )

    def human() -> None:
        escalation = operator.pending(match=lambda e: e["title"] == f"issue_refund {run_id}")
        operator.approve(escalation["id"], edited_arguments={"order": 1042, "amount": 600})

    Background(human)
    messages = agent_loop(model, [gated], "Refund order 1042, I was charged twice.")

    tool_message = messages[2]
    assert isinstance(tool_message, ToolMessage)
    assert tool_message.tool_call_id == run_id
    assert "Refunded $600 on order 1042." in tool_message.content
    assert messages[-1].content == "Done: refunded."


def test_a_small_call_skips_approval(live):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    gated = approval_tool(issue_refund, client, when=lambda args: args["amount"] > 500)
    assert gated.invoke({"order": 7, "amount": 20}) == "Refunded $20 on order 7."


def test_a_rejected_tool_call_returns_the_reason(live, operator, run_id):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    gated = approval_tool(issue_refund, client, title=lambda name, args: f"{name} {run_id}")
    Background(
        lambda: operator.answer(
            operator.pending(match=lambda e: e["title"] == f"issue_refund {run_id}")["id"],
            outcome="reject",
            comment="Ask for a receipt first.",
        )
    )
    output = gated.invoke({"order": 1, "amount": 900})
    assert "Ask for a receipt first." in output


async def test_the_async_path_of_an_approval_tool(live, operator, run_id):
    client = AsyncAwaitHuman(api_key=live.agent_key, base_url=live.base)
    gated = approval_tool(issue_refund, client, title=lambda name, args: f"{name} {run_id}")
    Background(
        lambda: operator.approve(
            operator.pending(match=lambda e: e["title"] == f"issue_refund {run_id}")["id"]
        )
    )
    assert await gated.ainvoke({"order": 2, "amount": 900}) == "Refunded $900 on order 2."


def test_ask_human_tool_returns_the_answer(live, operator, run_id):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    ask = ask_human_tool(client)
    assert ask.name == "ask_human"
    Background(
        lambda: operator.answer(
            operator.pending(match=lambda e: run_id in e["title"])["id"],
            outcome="answer",
            response={"answer": "Yes, the Pro plan."},
        )
    )
    assert ask.invoke({"question": f"Upgrade {run_id}?"}) == "Yes, the Pro plan."


class RefundState(TypedDict):
    order: int
    amount: int
    result: str


def refund_graph():
    def refund(state: RefundState) -> dict:
        decision = approval_interrupt(
            {
                "name": "issue_refund",
                "arguments": {"order": state["order"], "amount": state["amount"]},
            },
            title=f"Refund order {state['order']}",
        )
        if not decision.approved:
            return {"result": f"not refunded: {decision.reason}"}
        return {"result": issue_refund.invoke(decision.arguments)}

    builder = StateGraph(RefundState)
    builder.add_node("refund", refund)
    builder.add_edge(START, "refund")
    builder.add_edge("refund", END)
    return builder.compile(checkpointer=InMemorySaver())


def test_a_langgraph_interrupt_is_answered_and_resumed(live, operator, run_id):
    client = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    graph = refund_graph()
    config = {"configurable": {"thread_id": run_id}}
    Background(
        lambda: operator.approve(
            operator.pending(match=lambda e: e["external_id"].startswith(f"langgraph:{run_id}:"))[
                "id"
            ],
            comment="fine",
        )
    )
    final = run_with_approvals(graph, {"order": 1042, "amount": 750, "result": ""}, config, client)
    assert final["result"] == "Refunded $750 on order 1042."


def test_a_restarted_runner_picks_up_the_same_escalation(live, operator, run_id):
    graph = refund_graph()
    config = {"configurable": {"thread_id": run_id}}
    paused = graph.invoke({"order": 9, "amount": 900, "result": ""}, config)
    assert paused["__interrupt__"]  # the graph is checkpointed, waiting for a human

    first = AwaitHuman(api_key=live.agent_key, base_url=live.base)
    (pending,) = graph.get_state(config).interrupts
    from awaithuman_sdk.langchain import _request_kwargs

    created = first.create(kind="approval", **_request_kwargs(pending, run_id))
    # The runner dies here. A new one resumes the thread: same escalation, no second ask.
    Background(lambda: operator.answer(created.id, outcome="reject", comment="Not for this order."))
    final = run_with_approvals(
        graph, None, config, AwaitHuman(api_key=live.agent_key, base_url=live.base)
    )
    assert final["result"].startswith("not refunded")
    assert "Not for this order." in final["result"]
    assert [e.id for e in first.list(external_id=created.external_id)] == [created.id]


async def test_the_async_runner(live, operator, run_id):
    client = AsyncAwaitHuman(api_key=live.agent_key, base_url=live.base)
    graph = refund_graph()
    config = {"configurable": {"thread_id": run_id}}
    Background(
        lambda: operator.approve(
            operator.pending(match=lambda e: e["external_id"].startswith(f"langgraph:{run_id}:"))[
                "id"
            ]
        )
    )
    final = await arun_with_approvals(
        graph, {"order": 5, "amount": 750, "result": ""}, config, client
    )
    assert final["result"] == "Refunded $750 on order 5."
