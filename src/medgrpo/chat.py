"""A Gradio page to try a job's model: thinking shown collapsed, the answer apart, budget forcing at hand.

    make chat RUN=<job dir> [RUN2=<job dir>|base] [PORT=7860]
    python -m medgrpo.chat run=<job dir> [run2=<job dir>|base] [port=7860]
    make chat                   # no job: the real base model, SmolLM2-135M-Instruct (conf/preset/smollm2.yaml)

Served on 127.0.0.1 only (a research model, not a medical service). Each question is answered on its own, with the
job's prompt format and generation path (medgrpo.predict.Predictor, so evaluation's budget forcing): the sliders
set the thinking cap (0: the job's own budget) and how many times an early end of thinking is replaced by "Wait"
(s1's extend mode). With run2 (another job, or `base`: RUN's base model without its adapter) a second tab answers
one question with both models side by side. API endpoints (gradio_client): /ask and /compare.
"""
from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path

import gradio as gr

from medgrpo.errors import ConfigError, MedgrpoError
from medgrpo.evaluation.budget import Budget
from medgrpo.evaluation.engine import Sampling
from medgrpo.predict import Predictor, job_config, load_predictor, parse_args

log = logging.getLogger("medgrpo.chat")
KEYS = ("run", "run2", "port")
DISCLAIMER = ("**Research demo, not medical advice.** Answers come from an experimental model that can be wrong "
              "or unsafe. Do not use them to diagnose or treat anyone; ask a qualified clinician.")
MAX_THINKING = 4096


def question_item(question: str) -> dict:
    return {"id": "chat", "question": question, "context": "", "choices": [], "answer": None,
            "answer_type": "open"}


def forced_budget(base: Budget, max_thinking_tokens: int, waits: int) -> Budget:
    """The job's budget, or s1 forcing with the page's cap: cap mode, extend mode when Waits are asked for."""
    if max_thinking_tokens <= 0:
        return base
    answer_tokens = base.max_answer_tokens or base.max_new_tokens
    return dataclasses.replace(base, mode="extend" if waits > 0 else "cap", num_ignore=int(waits),
                               max_thinking_tokens=int(max_thinking_tokens), max_answer_tokens=answer_tokens)


def split_thinking(completion: str, think_open: str, think_close: str) -> tuple[str, str]:
    """(thinking, answer) of a completion. An opened thinking block that never closes is all thinking; a completion
    with neither delimiter is all answer (a model that does not write the format, like a base model, answers)."""
    thinking, closed, answer = completion.partition(think_close)
    if not closed and think_open not in completion:
        return "", completion.strip()
    if not closed:
        return completion.replace(think_open, "").strip(), ""
    return thinking.replace(think_open, "").strip(), answer.strip()


def answer_messages(predictor: Predictor, question: str, max_thinking_tokens: int, waits: int,
                    temperature: float) -> list[gr.ChatMessage]:
    """The assistant's turn: a collapsed thinking message and the answer."""
    budget = forced_budget(predictor.budget, max_thinking_tokens, waits)
    sampling = Sampling(temperature=float(temperature), top_p=predictor.sampling.top_p)
    line = predictor.predict([question_item(question)], budget=budget, sampling=sampling)[0]
    thinking, answer = split_thinking(line["completion"], predictor.prompt_format.think_open,
                                      predictor.prompt_format.think_close)
    title = f"Thinking ({line['thinking_tokens'] if thinking else 0} tokens, {line['waits']} Waits)"
    return [gr.ChatMessage(content=thinking or "(none)", metadata={"title": title, "status": "done"}),
            gr.ChatMessage(content=answer or "(no answer: the thinking was never closed; raise the limits)")]


def build_app(first: Predictor, second: Predictor | None = None) -> gr.Blocks:
    with gr.Blocks(title="medgrpo chat") as app:
        gr.Markdown(f"# medgrpo: {first.name}")
        gr.Markdown(DISCLAIMER)
        with gr.Row():
            max_thinking = gr.Slider(0, MAX_THINKING, value=0, step=1,
                                     label="Max thinking tokens (0: the job's budget)")
            waits = gr.Slider(0, 8, value=0, step=1, label="Waits (continue thinking when it stops early)")
            temperature = gr.Slider(0.0, 1.5, value=first.sampling.temperature, step=0.05, label="Temperature")
        controls = [max_thinking, waits, temperature]
        with gr.Tab("Chat"):
            chatbot = gr.Chatbot(label=first.name, height=420, elem_id="chatbot")
            question = gr.Textbox(label="Question", placeholder="Ask a medical question", elem_id="question")
            ask = gr.Button("Ask", variant="primary", elem_id="ask")

            def respond(text, history, *settings):
                if not text.strip():
                    return "", history
                turn = [gr.ChatMessage(role="user", content=text), *answer_messages(first, text, *settings)]
                return "", [*history, *turn]

            ask.click(respond, [question, chatbot, *controls], [question, chatbot], api_name="ask")
            question.submit(respond, [question, chatbot, *controls], [question, chatbot], api_visibility="private")
        if second is not None:
            with gr.Tab("Side by side"):
                with gr.Row():
                    left = gr.Chatbot(label=first.name, height=420)
                    right = gr.Chatbot(label=second.name, height=420)
                compare_question = gr.Textbox(label="Question for both", elem_id="compare_question")
                compare = gr.Button("Ask both", variant="primary", elem_id="compare")

                def respond_both(text, *settings):
                    user = gr.ChatMessage(role="user", content=text)
                    return ("", [user, *answer_messages(first, text, *settings)],
                            [user, *answer_messages(second, text, *settings)])

                compare.click(respond_both, [compare_question, *controls], [compare_question, left, right],
                              api_name="compare")
    return app


def base_model() -> Predictor:
    """The real base model a newcomer meets first: preset=smollm2's model with its prompt format and evaluation."""
    from medgrpo.config import compose_config

    return Predictor.load(compose_config("preset=smollm2", output_dir="."), None, "SmolLM2-135M-Instruct (base model)")


def load_pair(run: str, run2: str | None) -> tuple[Predictor, Predictor | None]:
    from medgrpo.backends.vllm_engines import keep_vllm_engines

    first = load_predictor({"run": run}, name=f"{Path(run).name} (trained)")
    if run2 is None:
        return first, None
    with keep_vllm_engines():  # both answer side by side: the second load must not release the first's vLLM engine
        if run2 == "base":  # the same job's base model: what training changed
            cfg = job_config(Path(run))
            return first, Predictor.load(cfg, None, f"{Path(run).name} (base model)")
        return first, load_predictor({"run": run2}, name=f"{Path(run2).name} (trained)")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv, KEYS)
        port = args.get("port", "7860")
        if not port.isdigit():
            raise ConfigError("port", f"expected a port number, got {port!r}")
        if not args.get("run"):  # `make chat` without RUN= passes run= empty
            if args.get("run2"):
                raise ConfigError("run2", "compares with a job: give run=<job dir> too")
            app = build_app(base_model())
        else:
            job_config(Path(args["run"]))  # refused before any model loads
            if args.get("run2") not in (None, "base"):
                job_config(Path(args["run2"]))
            app = build_app(*load_pair(args["run"], args.get("run2")))
    except MedgrpoError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    app.launch(server_name="127.0.0.1", server_port=int(port))


if __name__ == "__main__":
    main()
