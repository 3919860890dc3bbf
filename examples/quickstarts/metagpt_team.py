"""MetaGPT's multi-agent quickstart shape (metagpt 0.8): Roles with Actions hired into a Team.

Follows MetaGPT 0.8's "MultiAgent 101": ``Action`` subclasses with a
``PROMPT_TEMPLATE`` that call ``self._aask``, ``Role`` subclasses that
``set_actions`` and ``_watch`` each other, a ``Team`` that ``hire``s them,
``invest``s a budget, gets the idea with ``run_project`` and runs
``team.run(n_round=...)``. The one added line is ``aios.patch("metagpt")``: no
``config2.yaml`` and no API key are needed (the kernel is MetaGPT's model), each
role's model calls are scheduled under the role's name and the team run is one
program.

Run: python examples/quickstarts/metagpt_team.py
"""

import asyncio

import aios

aios.patch("metagpt")  # before MetaGPT is imported: it reads its configuration on import

from metagpt.actions import Action, UserRequirement  # noqa: E402
from metagpt.logs import logger  # noqa: E402
from metagpt.roles import Role  # noqa: E402
from metagpt.schema import Message  # noqa: E402
from metagpt.team import Team  # noqa: E402


class WriteSlogan(Action):
    PROMPT_TEMPLATE: str = """
    Write one short slogan for: {idea}
    Return only the slogan.
    """
    name: str = "WriteSlogan"

    async def run(self, idea: str) -> str:
        return await self._aask(self.PROMPT_TEMPLATE.format(idea=idea))


class ReviewSlogan(Action):
    PROMPT_TEMPLATE: str = """
    Context: {context}
    Give one sentence of feedback on the slogan above.
    """
    name: str = "ReviewSlogan"

    async def run(self, context: str) -> str:
        return await self._aask(self.PROMPT_TEMPLATE.format(context=context))


class Copywriter(Role):
    name: str = "Ada"
    profile: str = "Copywriter"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._watch([UserRequirement])
        self.set_actions([WriteSlogan])


class Editor(Role):
    name: str = "Ben"
    profile: str = "Editor"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._watch([WriteSlogan])
        self.set_actions([ReviewSlogan])

    async def _act(self) -> Message:
        logger.info(f"{self._setting}: to do {self.rc.todo}({self.rc.todo.name})")
        todo = self.rc.todo
        context = self.get_memories()
        feedback = await todo.run(context)
        return Message(content=feedback, role=self.profile, cause_by=type(todo))


async def main(idea: str = "a bakery that delivers bread by bicycle", investment: float = 3.0, n_round: int = 2) -> None:
    logger.info(idea)
    team = Team()
    team.hire([Copywriter(), Editor()])
    team.invest(investment=investment)
    team.run_project(idea)
    await team.run(n_round=n_round)


if __name__ == "__main__":
    asyncio.run(main())
