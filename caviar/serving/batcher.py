"""Micro-batching: concurrent requests share one forward pass, which is what keeps p99 low under load.

A failing batch is re-run request by request, so one client's input can never fail another's. Each
batch runs on the model in place when it starts; a swap (serving/live.py) takes effect at the next
batch, and every answer names the model that gave it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from model.predict import Prediction


@dataclass(frozen=True)
class Answer:
    predictions: list[Prediction]
    by: Any  # the model that answered: whatever `MicroBatcher.model` was when the batch began


class MicroBatcher:
    """Queue texts from concurrent requests; run them through the model together, off the event loop.
    `model` is anything with `predict(texts)`; assigning a new one is the swap."""

    def __init__(self, model, max_texts: int = 128):
        self.model, self.max_texts = model, max_texts
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def predict(self, texts: list[str]) -> Answer:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, future))
        return await future

    async def run(self) -> None:
        while True:
            jobs = [await self.queue.get()]
            count = len(jobs[0][0])
            while count < self.max_texts and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
                count += len(jobs[-1][0])
            model = self.model  # one model per batch, whatever a swap does meanwhile
            texts = [t for job_texts, _ in jobs for t in job_texts]
            try:
                predictions = await asyncio.to_thread(model.predict, texts)
            except Exception:  # re-run alone, so only the request at fault gets the error
                await self._one_by_one(model, jobs)
                continue
            start = 0
            for job_texts, future in jobs:
                if not future.done():
                    future.set_result(Answer(predictions[start : start + len(job_texts)], model))
                start += len(job_texts)

    async def _one_by_one(self, model, jobs: list) -> None:
        for job_texts, future in jobs:
            try:
                result = await asyncio.to_thread(model.predict, job_texts)
            except Exception as err:  # a model failure is the server's: 500 to this waiter only
                if not future.done():
                    future.set_exception(err)
                continue
            if not future.done():
                future.set_result(Answer(result, model))
