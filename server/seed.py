"""Example data through the model API, as the old seed.py did; safe to run again and again."""

from __future__ import annotations

from collections.abc import Callable

from server.config import DatabaseConfig
from server.models.backends import make_database
from server.models.database import Database
from server.models.migrate import describe, prepare_database
from server.models.user import User

SEED_USER_ID = 1
SEED_NAME = "Asdf"


async def seed(db: Database, say: Callable[[str], object] = print) -> None:
    """Find user 1 or create it, rename it, save it, and query with `where`, saying what happened."""
    user = await User.get_or_none(db, SEED_USER_ID)
    if user is None:
        user = await User.create(db, id=SEED_USER_ID, name="Seed user")
        say(f"User.create(id={SEED_USER_ID}): created {user!r}")
    else:
        say(f"User.get_or_none({SEED_USER_ID}): found {user!r}")

    user.name = SEED_NAME
    changed = sorted(user.changes())
    await user.save()
    if changed:
        say(f"user.save(): wrote {', '.join(changed)} -> {user!r}")
    else:
        say(f"user.save(): nothing to write, the name is already {SEED_NAME!r}")

    named = await User.where(db, name=SEED_NAME).order_by("id").all()
    say(f"User.where(name={SEED_NAME!r}).all(): {named!r}")
    recent = await User.query(db).order_by("-created_at", "-id").limit(3).all()
    say(f"User.query().order_by('-created_at', '-id').limit(3).all(): {recent!r}")
    say(f"User.count(): {await User.count(db)}")


async def seed_command(cfg: DatabaseConfig, say: Callable[[str], object] = print) -> int:
    """`python -m server seed` and `python seed.py`: prepare the database as start-up does, then seed."""
    db = make_database(cfg, small=True)
    await db.open()
    try:
        report = await prepare_database(db, auto_migrate=cfg.auto_migrate)
        if report.applied:
            say(describe(report, db.label))
        await seed(db, say)
    finally:
        await db.close()
    return 0
