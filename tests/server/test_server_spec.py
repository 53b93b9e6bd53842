"""Speculative decoding behind the server: the official client streams the same text as the
offline engine without speculation, stop strings cut multi-token steps, and the Prometheus
counters report drafts and acceptance under vLLM's names."""

from __future__ import annotations

from openai import OpenAI
from serverkit import MODEL_NAME, engine_idle, metrics, run_server, wait_until

from intaglio import LLM, SamplingParams

PROMPT = "abc abc abc abc abc abc abc abc"


def test_streamed_speculative_output_equals_plain_offline(model_path: str, offline: LLM) -> None:
    with run_server(model_path, speculative_method="ngram", speculative_adaptive=False) as s:
        client = OpenAI(base_url=f"{s.url}/v1", api_key="x")
        chunks = list(
            client.completions.create(
                model=MODEL_NAME, prompt=PROMPT, max_tokens=40, temperature=0, stream=True
            )
        )
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        want = offline.generate([PROMPT], SamplingParams(temperature=0, max_tokens=40))
        assert text == want[0].outputs[0].text
        # A stop string inside an accepted run of drafts ends the text exactly where it does
        # without speculation.
        stop = want[0].outputs[0].text[5:8]
        whole = client.completions.create(
            model=MODEL_NAME, prompt=PROMPT, max_tokens=40, temperature=0, stop=[stop]
        )
        plain = offline.generate(
            [PROMPT], SamplingParams(temperature=0, max_tokens=40, stop=[stop])
        )
        assert whole.choices[0].text == plain[0].outputs[0].text
        wait_until(lambda: engine_idle(s.url), what="the engine to go idle")
        m = metrics(s.url)
        assert m["intaglio_spec_decode_num_draft_tokens_total"] > 0
        accepted = m["intaglio_spec_decode_num_accepted_tokens_total"]
        assert accepted == sum(
            v for k, v in m.items() if k.startswith("intaglio_spec_decode_num_accepted_tokens_per")
        )
        assert m["intaglio_spec_decode_num_drafts_total"] > 0
