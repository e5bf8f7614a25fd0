"""The history database: sites, observations, detections and alerts (SQLAlchemy 2 Core).

One SQLite file by default (``DIR/history.sqlite``); any SQLAlchemy URL works as well
(``postgresql+psycopg://user@host/db`` with its driver installed). Tables:

* ``sites``: name (unique), grid (CRS, transform, size), AOI (WKT in the grid CRS) and the AOI
  window of the grid the observation rasters cover, centre latitude/longitude;
* ``observations``: one per (site, date, scene hash), unique: scene, valid fraction, gap flag,
  mined km2 (NULL on gaps), number of polygons, the observation raster and polygons files;
* ``detections``: the mining polygons of an observation (WKT in the scene CRS, GeoJSON in WGS84);
* ``alerts``: one per (site, region, kind, date), unique: first-seen date, area, growth,
  centroid latitude/longitude, outline (WKT and GeoJSON), link to the date's polygons file.

Each date is written by :meth:`History.record_date` in one transaction, so a run killed
midway keeps every date committed before the kill.

Several runs may share one database (e.g. one per site, in parallel). On SQLite every write
is one ``BEGIN IMMEDIATE`` transaction (writers queue for up to :data:`BUSY_SECONDS` instead of
failing or deadlocking), whose existence checks and inserts are therefore atomic: no site,
observation or alert is recorded twice. A new database file is published with ``link``, which
never replaces a database another run created meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (Boolean, Column, Date, DateTime, Float, ForeignKey, Integer, MetaData, String, Table, Text,
                        UniqueConstraint, create_engine, event, select, text)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from sandwatch.errors import SandwatchError
from sandwatch.io import free_bytes, remove_quietly, temporary_sibling, write_error

#: How long a write waits for another run's write transaction on the same SQLite database.
BUSY_SECONDS = 120.0

metadata = MetaData()

sites = Table(
    "sites", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("crs", Text, nullable=False),
    Column("transform", Text, nullable=False),      # JSON list of 6 affine coefficients
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("window", Text, nullable=False),         # JSON [row, col, height, width] of the AOI window
    Column("aoi_wkt", Text, nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("created", DateTime, nullable=False),
)

observations = Table(
    "observations", metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False, index=True),
    Column("date", Date, nullable=False),
    Column("scene", Text, nullable=False),
    Column("scene_hash", String(64), nullable=False),
    Column("valid_fraction", Float, nullable=False),
    Column("gap", Boolean, nullable=False),
    Column("mined_km2", Float),                     # NULL on gap dates
    Column("n_polygons", Integer),                  # NULL on gap dates
    Column("cloud_test", String(16)),
    Column("observation_raster", Text),             # uint8 GeoTIFF of the AOI window: 1 mine, 0 not, 255 unobserved
    Column("polygons", Text),                       # GeoJSON of the date's mining polygons
    Column("created", DateTime, nullable=False),
    UniqueConstraint("site_id", "date", "scene_hash", name="uq_observation"),
)

detections = Table(
    "detections", metadata,
    Column("id", Integer, primary_key=True),
    Column("observation_id", Integer, ForeignKey("observations.id"), nullable=False, index=True),
    Column("polygon", Integer, nullable=False),
    Column("area_m2", Float, nullable=False),
    Column("wkt", Text, nullable=False),
    Column("geojson", Text, nullable=False),
)

def outline_columns() -> list[Column]:
    """Where an alert is: centroid latitude/longitude, outline as WKT (grid CRS) and GeoJSON (WGS84)."""
    return [Column("latitude", Float), Column("longitude", Float), Column("wkt", Text), Column("geojson", Text)]


alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True),
    Column("site_id", Integer, ForeignKey("sites.id"), nullable=False, index=True),
    Column("region", Integer, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("date", Date, nullable=False),
    Column("first_seen", Date, nullable=False),
    Column("area_m2", Float, nullable=False),
    Column("growth_m2", Float, nullable=False),
    *outline_columns(),
    Column("polygons", Text),
    Column("created", DateTime, nullable=False),
    UniqueConstraint("site_id", "region", "kind", "date", name="uq_alert"),
)


def database_url(db: str | os.PathLike) -> str:
    """An SQLAlchemy URL: URLs (``scheme://...``) as they are, paths as ``sqlite:///PATH``."""
    text = str(db)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).resolve()}"


def insert_ignore(conn, table: Table, row: dict[str, Any], keys: list[str]) -> int | None:
    """``INSERT ... ON CONFLICT (keys) DO NOTHING RETURNING id`` on SQLite and PostgreSQL:
    atomic under concurrent writers, whatever the isolation level (a row another run inserted
    first is simply not inserted again). Returns the new row's id, None when it existed.
    (``RETURNING``, not the cursor's rowcount: psycopg reported -1 for some of these.)"""
    name = conn.dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other back-ends: a unique constraint still refuses the duplicate
        raise SandwatchError.about(conn.engine.url.render_as_string(hide_password=True),
                                   f"database {name!r} is not supported", "use SQLite or PostgreSQL")
    stmt = insert(table).values(row).on_conflict_do_nothing(index_elements=keys).returning(table.c.id)
    return conn.execute(stmt).scalar()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@dataclass
class SiteRecord:
    id: int
    name: str
    crs: str
    transform: list[float]
    width: int
    height: int
    window: list[int]
    aoi_wkt: str
    latitude: float | None
    longitude: float | None


class History:
    """The monitoring history behind a URL or SQLite path (tables created when missing)."""

    def __init__(self, db: str | os.PathLike, *, must_exist: bool = False):
        url = database_url(db)
        self.url = url
        self.path: Path | None = None
        if url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///"):])
            self.path = path
            if must_exist and not path.is_file():
                raise SandwatchError.about(path, "no such history database", "pass the history.sqlite of a monitor run")
            if not path.exists():
                _create_sqlite(path)   # whole or absent: a failed creation leaves no empty file
        try:
            if url.startswith("sqlite"):
                self.engine: Engine = create_engine(url, future=True, connect_args={"timeout": BUSY_SECONDS})
                event.listen(self.engine, "connect", _sqlite_pragmas)
                event.listen(self.engine, "begin", _sqlite_begin)
            else:
                self.engine = create_engine(url, future=True)
            #: connections whose transactions write: BEGIN IMMEDIATE on SQLite
            self._writer = self.engine.execution_options(sandwatch_write=True)
            with self._writer.begin() as conn:   # one creator at a time (SQLite: IMMEDIATE; PostgreSQL: a lock)
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(5831021501)"))
                metadata.create_all(conn)
        except ModuleNotFoundError as err:
            raise SandwatchError.about(db, f"needs the database driver {err.name!r}",
                                       "pip install 'sandwatch[postgres]' (psycopg) for a postgresql+psycopg:// URL") \
                from None
        except Exception as err:  # noqa: BLE001 - bad URL / unreachable server / not a database
            self._raise(err, db)

    def _raise(self, err: BaseException, db=None):
        """One line for a failed database operation: disk full / not writable for a local file,
        else what the database said."""
        what = self.path if self.path is not None else (db or self.url)
        if self.path is not None:
            mapped = write_error(self.path, err, free=free_bytes(self.path.parent))
            if mapped is not None:
                raise mapped from None
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise SandwatchError.about(what, f"cannot be opened as a history database ({first})",
                                   "pass a .sqlite path or a reachable SQLAlchemy URL") from None

    def close(self) -> None:
        self.engine.dispose()

    # ---- sites ---------------------------------------------------------------------------
    def site(self, name: str) -> SiteRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(sites).where(sites.c.name == name)).mappings().first()
        return _site_record(row) if row else None

    def sites(self) -> list[SiteRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(sites).order_by(sites.c.name)).mappings().all()
        return [_site_record(r) for r in rows]

    def add_site(self, name: str, *, crs: str, transform: list[float], width: int, height: int, window: list[int],
                 aoi_wkt: str, latitude: float | None, longitude: float | None) -> SiteRecord:
        """Add a site, or (another run added it first) return the one recorded: the caller
        compares its grid and AOI as for any known site."""
        try:
            with self._writer.begin() as conn:
                insert_ignore(conn, sites, dict(
                    name=name, crs=crs, transform=json.dumps(list(transform)), width=width, height=height,
                    window=json.dumps(list(window)), aoi_wkt=aoi_wkt, latitude=latitude, longitude=longitude,
                    created=_now()), ["name"])
        except OperationalError as err:
            self._raise(err)
        return self.site(name)  # type: ignore[return-value]

    # ---- observations --------------------------------------------------------------------
    def observations(self, site_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(observations).where(observations.c.site_id == site_id)
                                .order_by(observations.c.date, observations.c.scene_hash)).mappings().all()
        return [dict(r) for r in rows]

    def alerts(self, site_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(alerts).where(alerts.c.site_id == site_id)
                                .order_by(alerts.c.date, alerts.c.region, alerts.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def detections(self, observation_id: int) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(detections).where(detections.c.observation_id == observation_id)
                                .order_by(detections.c.polygon)).mappings().all()
        return [dict(r) for r in rows]

    def record_date(self, site_id: int, observation: dict[str, Any] | None, polygons: list[dict[str, Any]],
                    new_alerts: list[dict[str, Any]]) -> tuple[int, int]:
        """In ONE transaction: the observation (unless None or already there) with its
        detections, and the alerts not yet recorded. Returns (observations added, alerts added)."""
        try:
            return self._record_date(site_id, observation, polygons, new_alerts)
        except OperationalError as err:   # disk full / read-only: the transaction is rolled back
            self._raise(err)

    def _record_date(self, site_id, observation, polygons, new_alerts) -> tuple[int, int]:
        n_obs = n_alerts = 0
        with self._writer.begin() as conn:
            if observation is not None:
                obs_id = insert_ignore(conn, observations, dict(site_id=site_id, created=_now(), **observation),
                                       ["site_id", "date", "scene_hash"])
                if obs_id is not None:
                    if polygons:
                        conn.execute(detections.insert(), [{"observation_id": obs_id, **p} for p in polygons])
                    n_obs = 1
            for a in new_alerts:
                n_alerts += insert_ignore(conn, alerts, dict(site_id=site_id, created=_now(), **a),
                                          ["site_id", "region", "kind", "date"]) is not None
        return n_obs, n_alerts


def _create_sqlite(path: Path) -> None:
    """A new SQLite history with its tables, written under a temporary name, checked, fsynced
    and published with ``link``: never over a database another run created meanwhile (that
    one is used), and on a full or read-only disk no empty database file is left under the
    final name (one line naming it instead)."""
    import sqlite3

    tmp = temporary_sibling(path)
    try:
        engine = create_engine(f"sqlite:///{tmp}", future=True)
        try:
            metadata.create_all(engine)
        finally:
            engine.dispose()
        con = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
        try:
            if con.execute("PRAGMA quick_check").fetchall() != [("ok",)]:
                raise OSError("the new database does not read back")
        finally:
            con.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass                               # another run created it first: use theirs
        except OSError:
            if not path.exists():              # a file system without hard links
                os.rename(tmp, path)
    except Exception as err:
        free = free_bytes(path.parent)
        remove_quietly(tmp)
        raise write_error(path, err, free=free, generic=True) from None
    finally:
        remove_quietly(tmp)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    dbapi_conn.isolation_level = None   # transactions are begun by _sqlite_begin, not by the driver
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=FULL")
    cur.close()


def _sqlite_begin(conn) -> None:
    """Writes take SQLite's write lock at BEGIN (waiting up to :data:`BUSY_SECONDS` for another
    run's write): their checks and inserts are atomic, and two writers never deadlock."""
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sandwatch_write") else "BEGIN")


def _site_record(row) -> SiteRecord:
    return SiteRecord(id=row["id"], name=row["name"], crs=row["crs"], transform=json.loads(row["transform"]),
                      width=row["width"], height=row["height"], window=json.loads(row["window"]),
                      aoi_wkt=row["aoi_wkt"], latitude=row["latitude"], longitude=row["longitude"])


from sandwatch.monitor import history_alerts  # noqa: E402,F401 - the alert tables join ``metadata``
