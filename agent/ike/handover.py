"""The hand-over at an IKE SA rekey (section 2.18): the new IKE SA inherits the old
one's child SAs, and the child exchanges queued or deferred on the old SA follow them;
the old SA announces the new one in IkeSaRekeyed.

Every function takes the old IkeSa; tasks reach them through ``IkeSa.hand_over``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .events import IkeSaRekeyed
from .task_manager import CHILD_TASKS, Task

if TYPE_CHECKING:
    from .ike_sa import IkeSa


def hand_over(
    sa: IkeSa, new_sa: IkeSa, *, carries_children: bool = True, also_from: IkeSa | None = None
) -> None:
    """Announce an IKE SA that a rekey of ``sa`` made (section 2.18) and, when it
    carries the children, move them to it (from ``also_from`` too, when a crossing
    rekey's SA held them, section 2.8.2)."""
    if carries_children:
        for holder in (sa, also_from):
            if holder is not None and holder is not new_sa:
                new_sa.children.update(holder.children)
                holder.children = {}
                holder.successor = new_sa
                holder.migrate_child_tasks(new_sa)
    assert new_sa.proposal is not None
    sa.emit(
        IkeSaRekeyed(
            sa.spi_i,
            sa.spi_r,
            new_sa.spi_i,
            new_sa.spi_r,
            str(new_sa.proposal),
            new_sa,
            carries_children,
        )
    )


def migrate_child_tasks(sa: IkeSa, new_sa: IkeSa) -> None:
    """Queued child exchanges follow their children to the new IKE SA (section 2.18)."""
    moving = [t for t in sa.tasks.queue if t.kind in CHILD_TASKS]
    for task in moving:
        sa.tasks.queue.remove(task)
        task.sa = new_sa
        new_sa.tasks.queue_task(task)
    staying: list[tuple[float, Task]] = []
    for at, deferred in sa._deferred:
        if deferred.kind in CHILD_TASKS:
            deferred.sa = new_sa
            new_sa.defer(deferred, at)
        else:
            staying.append((at, deferred))
    sa._deferred = staying
    if moving:
        new_sa.tasks.initiate(sa.tasks.now)
