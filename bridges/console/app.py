"""The console's pages and API (Starlette): server-rendered HTML, one small script, server-sent events.

Every URL in the pages is relative and every page carries ``<base href>`` from Home Assistant's
``X-Ingress-Path`` when present, so the console works at ``/`` and behind ingress alike.

Access (``Access``): from loopback, anyone on this machine; from elsewhere, a request needs the
token (``Authorization: Bearer``, or ``?token=`` once, which sets an HttpOnly cookie) or must come
from an ``ingress_from`` address with ``X-Ingress-Path``. Everything else gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sensorium.bridges.console.service import Console
from sensorium.bridges.console.store import Cluster
from sensorium.pipeline.codec import to_json
from sensorium.pipeline.messages import Event

PAGE_SIZE = 50
TYPES = ("presence", "face", "speaker", "transcript", "wake", "detections", "node_status", "budget_violation")


def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def clock(t: float) -> str:
    return datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else ""


def ago(t: float) -> str:
    d = max(0.0, time.time() - t)
    if d < 90:
        return f"{d:.0f} s"
    if d < 5400:
        return f"{d / 60:.0f} min"
    return f"{d / 3600:.1f} h"


# ------------------------------------------------------------------------------------------ access


@dataclass
class Access:
    """Who may use the console."""

    token: str = ""
    ingress_from: tuple[str, ...] = ()

    def allowed(self, scope: Scope) -> bool:
        client = (scope.get("client") or ("", 0))[0]
        if client in ("127.0.0.1", "::1", "localhost") or client.startswith("127."):
            return True
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if client in self.ingress_from and "x-ingress-path" in headers:
            return True
        if not self.token:
            return False
        given = ""
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        for part in headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == "sensorium_console" and not given:
                given = v
        qs = scope.get("query_string", b"").decode("latin-1")
        for part in qs.split("&"):
            k, _, v = part.partition("=")
            if k == "token" and not given:
                given = v
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())


class AccessMiddleware:
    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.access.allowed(scope):
            resp = Response("401: this console needs its token (or Home Assistant's ingress)\n", 401)
            await resp(scope, receive, send)
            return
        qs = scope.get("query_string", b"").decode("latin-1")
        token = next((p[6:] for p in qs.split("&") if p.startswith("token=")), "")
        if token and self.access.token:

            async def send_cookie(message: Any) -> None:
                if message["type"] == "http.response.start":
                    cookie = f"sensorium_console={token}; HttpOnly; SameSite=Strict; Path=/"
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
                await send(message)

            await self.app(scope, receive, send_cookie)
            return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------------------- pages

STYLE = """
body{font:14px system-ui,sans-serif;margin:0;background:#f5f5f4;color:#1c1917}
nav{background:#1c1917;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
nav a{color:#e7e5e4;text-decoration:none}nav a.on{color:#fff;font-weight:600}
#hub{margin-left:auto;font-size:12px}#hub.down{color:#f87171}#hub.up{color:#86efac}
main{padding:16px;display:grid;gap:16px}
.card{background:#fff;border-radius:8px;padding:12px 16px;box-shadow:0 1px 2px #0002}
.rooms{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:16px}
.person{display:flex;justify-content:space-between;padding:2px 0}.muted{color:#78716c;font-size:12px}
.cam{max-width:100%}.frame{position:relative;display:inline-block;max-width:100%}
.frame img{max-width:100%;display:block}.frame svg{position:absolute;left:0;top:0;width:100%;height:100%}
table{border-collapse:collapse;width:100%}td,th{padding:4px 6px;border-bottom:1px solid #e7e5e4;text-align:left}
.crop{width:64px;height:64px;object-fit:cover;border-radius:4px}
.cluster{display:flex;gap:12px;align-items:flex-start;flex-wrap:wrap}
.proposal{background:#ecfccb;padding:6px;border-radius:6px}
.corner{font-size:12px}.bar{height:8px;background:#d6d3d1;border-radius:4px;position:relative}
.bar i{position:absolute;left:0;top:0;bottom:0;background:#16a34a;border-radius:4px}.bar i.over{background:#dc2626}
"""

SCRIPT = """
(function(){
  const hub=document.getElementById('hub');
  function refresh(id, url){const el=document.getElementById(id); if(!el) return;
    fetch(url,{credentials:'same-origin'}).then(r=>r.text()).then(t=>{el.innerHTML=t;});}
  let es=null;
  function connect(){
    es=new EventSource('api/live');
    es.addEventListener('hub',e=>{const up=JSON.parse(e.data);hub.textContent=up?'hub connected':'hub down';
      hub.className=up?'up':'down';});
    es.addEventListener('rooms',()=>refresh('rooms','fragment/rooms'));
    es.addEventListener('frame',()=>refresh('rooms','fragment/rooms'));
    es.addEventListener('inbox',()=>{const box=document.getElementById('inbox'); if(!box) return;
      // never redraw under someone typing a name or ticking boxes: the next action redraws
      const typing=box.contains(document.activeElement)||[...box.querySelectorAll('input[id^=name-]')].some(e=>e.value);
      if(!typing) refresh('inbox','fragment/inbox');});
    es.addEventListener('stats',()=>refresh('health','fragment/health'));
    es.addEventListener('event',e=>{const tl=document.getElementById('timeline-body');
      if(!tl||tl.dataset.live!=='1') return; const row=JSON.parse(e.data);
      const f=tl.dataset;
      if((f.room&&f.room!==row.room)||(f.type&&f.type!==row.type)||(f.person&&f.person!==row.person)) return;
      tl.insertAdjacentHTML('afterbegin',row.html);});
    es.onerror=()=>{hub.textContent='console unreachable, reconnecting';hub.className='down';};
  }
  connect();
  window.act=function(url, body){return fetch(url,{method:'POST',credentials:'same-origin',
      headers:{'content-type':'application/json'},body:JSON.stringify(body||{})})
    .then(r=>r.json().then(j=>{const m=document.getElementById('msg'); if(m) m.textContent=j.error||j.done||'';
      refresh('inbox','fragment/inbox');}));};
  window.nameCluster=function(id){const n=document.getElementById('name-'+id).value;
    const c=document.getElementById('consent-'+id).checked;
    const also=[...document.querySelectorAll('.also-'+id)].filter(e=>e.checked).map(e=>+e.value);
    act('api/clusters/'+id+'/name',{name:n,also:also,consent:c?'consent given (recorded in the console)':''});};
  window.acceptProposal=function(id,person){const c=document.getElementById('consent-'+id).checked;
    act('api/clusters/'+id+'/name',{name:person,consent:c?'consent given (recorded in the console)':''});};
})();
"""


def page(request: Request, title: str, body: str, active: str) -> HTMLResponse:
    base = request.headers.get("x-ingress-path", "").rstrip("/") + "/"
    links = [("./", "Rooms"), ("timeline", "Timeline"), ("inbox", "Unknowns"), ("health", "Health")]
    nav = "".join(f'<a href="{href}" class="{"on" if label == active else ""}">{label}</a>' for href, label in links)
    return HTMLResponse(
        f"""<!doctype html><html><head><meta charset="utf-8"><base href="{esc(base)}">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>{esc(title)} · sensorium</title>
<style>{STYLE}</style></head><body><nav><b>sensorium</b>{nav}<span id="hub">…</span></nav>
<main>{body}</main><script>{SCRIPT}</script></body></html>"""
    )


def rooms_fragment(console: Console) -> str:
    live = console.live
    cards = []
    for name in sorted(live.rooms):
        r = live.rooms[name]
        rows = [
            f'<div class="person" data-person="{esc(p)}"><a href="person/{esc(p)}">{esc(p)}</a>'
            f'<span class="muted">since {clock(h.since)} · {esc(", ".join(h.sources) or "-")} · '
            f"{h.confidence:.2f}</span></div>"
            for p, h in sorted(r.people.items())
        ]
        rows += [
            f'<div class="person" data-person="unknown {i}"><span>unknown {i}</span>'
            f'<span class="muted">since {clock(r.unknown_since)}</span></div>'
            for i in range(1, r.unknown + 1)
        ]
        cams = []
        for cam in sorted(r.cameras):
            key = f"{name}/{cam}"
            frame = console.frames.get(key)
            if frame is None:
                continue
            det = live.detections.get(key)
            sw, fs = max(2.0, frame.width / 250), max(14.0, frame.width / 24)  # readable once scaled to the card
            boxes = []
            for b in det.boxes if det else []:
                who = live.names.get((key, b.track), ("", 0.0))[0]
                boxes.append(
                    f'<rect x="{b.x1:.0f}" y="{b.y1:.0f}" width="{b.x2 - b.x1:.0f}" height="{b.y2 - b.y1:.0f}" '
                    f'fill="none" stroke="#22c55e" stroke-width="{sw}"/>'
                    f'<text x="{b.x1 + sw:.0f}" y="{b.y1 + fs:.0f}" fill="#22c55e" font-size="{fs:.0f}" '
                    f'font-weight="bold" class="boxname">'
                    f"{esc(who or 'person')}</text>"
                )
            cams.append(
                f'<div class="cam"><div class="frame"><img src="api/frame/{esc(name)}/{esc(cam)}?t={frame.seq}" '
                f'alt="{esc(cam)}"><svg viewBox="0 0 {frame.width} {frame.height}" preserveAspectRatio="none">'
                f"{''.join(boxes)}</svg></div>"
                f'<div class="muted">{esc(cam)} · {ago(frame.time)} ago</div></div>'
            )
        count = len(r.people) + r.unknown
        cards.append(
            f'<section class="card room" data-room="{esc(name)}"><h3>{esc(name)} '
            f'<span class="muted count">{count} here</span></h3>'
            f"{''.join(rows) or '<div class=muted>nobody</div>'}{''.join(cams)}</section>"
        )
    nodes = "".join(
        f"<div>{esc(n)} <span class='muted'>{esc(s.role)}</span> <b>{esc(s.state)}</b> {esc(s.detail[:60])}</div>"
        for n, s in sorted(live.nodes.items())
    )
    assignments = live.placement.get("assignments", []) if live.placement else []
    placed = "".join(
        f"<div>{esc(a['stage'])}/{esc(a['stream'])} → {esc(a['worker'] or 'none')}</div>" for a in assignments
    )
    corner = f'<section class="card corner"><b>Nodes</b>{nodes or "<div class=muted>none heard yet</div>"}'
    corner += f"<b>Placement</b>{placed or '<div class=muted>one worker per stage</div>'}</section>"
    return f'<div class="rooms">{"".join(cards) or "<p class=muted>no room heard from yet</p>"}{corner}</div>'


def event_row(ev: dict[str, Any]) -> str:
    t = ev.get("type", "")
    who = ev.get("person") or ev.get("speaker") or ""
    score = ev.get("score", ev.get("speaker_score", ""))
    if t == "transcript":
        what = f"“{esc(ev.get('text', ''))}”" + ("" if ev.get("final") else " <span class=muted>(partial)</span>")
    elif t == "presence":
        what = f"{esc(ev.get('state'))} · {esc(', '.join(ev.get('sources', [])))}"
    elif t == "node_status":
        what = f"{esc(ev.get('node'))} {esc(ev.get('state'))} {esc(ev.get('detail', ''))}"
    elif t == "budget_violation":
        what = f"{esc(ev.get('stage'))} {ev.get('actual_ms', 0):.0f} ms > {ev.get('budget_ms', 0):.0f} ms"
    elif t == "detections":
        what = f"{ev.get('persons', 0)} in view on {esc(ev.get('camera'))}"
    else:
        what = esc(ev.get("camera") or ev.get("word") or ev.get("utterance_id") or "")
    media = ev.get("_media") or ""
    thumb = ""
    if media.endswith(".jpg"):
        thumb = f'<img class="crop" src="media/{esc(media)}" alt="face">'
    elif media.endswith(".wav"):
        thumb = f'<audio controls preload="none" src="media/{esc(media)}"></audio>'
    score_s = f"{float(score):.2f}" if isinstance(score, int | float) and who else ""
    person = f'<a href="person/{esc(who)}">{esc(who)}</a>' if who and who != "unknown" else esc(who)
    return (
        f'<tr data-seq="{ev.get("seq")}" data-type="{esc(t)}"><td class=muted>{clock(ev.get("time", 0))}</td>'
        f"<td>{esc(ev.get('room', ''))}</td><td>{esc(t)}</td><td class=who>{person}</td><td>{score_s}</td>"
        f"<td>{what}</td><td>{thumb}</td></tr>"
    )


def cluster_card(c: Cluster, others: list[Cluster], similar: list[tuple[int, float]] | None = None) -> str:
    media = "".join(
        f'<img class="crop" src="media/{esc(m)}" alt="face">'
        if m.endswith(".jpg")
        else f'<audio controls preload="none" src="media/{esc(m)}"></audio>'
        for m in c.media
    )
    if not media:
        media = "<span class=muted>(embeddings only)</span>"
    prop = c.proposal()
    proposal = ""
    if prop is not None:
        person, n, total = prop
        other = "face" if c.kind == "voice" else "voice"
        proposal = (
            f'<div class="proposal" data-proposal="{esc(person)}">Probably <b>{esc(person)}</b>: in {n} of {total} '
            f"{c.kind} samples {esc(person)} was the only known person in the room ({other} and presence). "
            f"<button class=accept onclick=\"acceptProposal({c.id},'{esc(person)}')\">"
            f"Accept: {esc(person)}</button></div>"
        )
    by_id = {o.id: o for o in others}
    also = ""
    for oid, sim in similar or []:
        o = by_id.get(oid)
        if o is None:
            continue
        thumbs = "".join(
            f'<img class="crop" src="media/{esc(m)}" alt="face">' for m in o.media[:3] if m.endswith(".jpg")
        )
        also += (
            f'<label class="also"><input type=checkbox checked class="also-{c.id}" value="{oid}"> '
            f"cluster {oid} (similarity {sim:.2f}) {thumbs}</label> "
        )
    if also:
        also = f'<div class="similar">Probably the same person, named together unless unticked: {also}</div>'
    merge = "".join(f'<option value="{o.id}">cluster {o.id}</option>' for o in others if o.id != c.id)
    pick = f"+document.getElementById(&quot;merge-{c.id}&quot;).value"
    merge_html = (
        f'<select id="merge-{c.id}">{merge}</select><button class=merge '
        f'onclick="act(&quot;api/clusters/{c.id}/merge&quot;,{{into:{pick}}})">Merge into</button>'
        if merge
        else ""
    )
    return f"""<section class="card cluster" data-cluster="{c.id}" data-kind="{c.kind}">
<div><b>{c.kind} cluster {c.id}</b><div class=muted>{len(c.samples)} samples · {esc(", ".join(c.rooms))} ·
last {clock(c.last)}</div>{media}</div>
<div>{proposal}{also}
<input id="name-{c.id}" placeholder="name" aria-label="name for cluster {c.id}">
<label><input type=checkbox id="consent-{c.id}"> consent given</label>
<button class=name onclick="nameCluster({c.id})">Name</button>
<button class=ignore onclick="act('api/clusters/{c.id}/ignore')">Ignore</button>
{merge_html}
</div></section>"""


def inbox_fragment(console: Console) -> str:
    clusters = console.store.clusters("open")
    by_kind = {k: [c for c in clusters if c.kind == k] for k in ("face", "voice")}
    order = sorted(clusters, key=lambda c: (c.proposal() is None, -len(c.samples), -c.last))
    parts = [cluster_card(c, by_kind[c.kind], console.similar(c.id)) for c in order]
    ignored = len(console.store.clusters("ignored"))
    return (
        "".join(parts) or "<p class=muted>no unknown faces or voices to review</p>"
    ) + f"<p class=muted>{ignored} ignored clusters (kept as negative examples)</p>"


def health_fragment(console: Console) -> str:
    rows = []
    for key, s in sorted(console.live.stats.items()):
        pct = min(100.0, 100.0 * s.p95_ms / s.budget_ms) if s.budget_ms else 0.0
        hist = console.live.history.get(key, ())
        pts = " ".join(
            f"{i * 2},{40 - min(40.0, 40.0 * p / max(s.budget_ms, 1e-9) / 1.5):.1f}" for i, (_, p) in enumerate(hist)
        )
        budget_y = 40 - 40 / 1.5
        spark = (
            f'<svg width="240" height="40"><line x1="0" x2="240" y1="{budget_y:.1f}" y2="{budget_y:.1f}" '
            f'stroke="#dc2626" stroke-dasharray="3"/><polyline points="{pts}" fill="none" stroke="#2563eb"/></svg>'
        )
        rows.append(
            f'<tr data-stage="{esc(s.stage)}"><td>{esc(s.stage)}</td><td>{esc(s.source)}</td>'
            f"<td>{s.p50_ms:.0f}</td><td>{s.p95_ms:.0f}</td><td>{s.budget_ms:.0f}</td>"
            f'<td><div class=bar><i class="{"over" if s.p95_ms > s.budget_ms else ""}" style="width:{pct:.0f}%">'
            f"</i></div>{spark}</td>"
            f"<td>{s.dropped}</td><td>{s.violations}</td><td>{s.queue}</td><td>{s.level}</td></tr>"
        )
    nodes = "".join(
        f"<tr><td>{esc(n)}</td><td>{esc(s.role)}</td><td>{esc(s.state)}</td><td>{esc(s.detail)}</td>"
        f"<td>{s.offset_ms:.1f}</td><td>{clock(s.time)}</td></tr>"
        for n, s in sorted(console.live.nodes.items())
    )
    return (
        "<section class=card><h3>Stages</h3><table><tr><th>stage</th><th>worker</th><th>p50 ms</th><th>p95 ms</th>"
        "<th>budget ms</th><th>p95 against budget (dashed: budget)</th><th>dropped</th><th>violations</th>"
        f"<th>queue</th><th>degrade</th></tr>{''.join(rows)}</table>"
        f"{'' if rows else '<p class=muted>no stage has reported yet</p>'}</section>"
        "<section class=card><h3>Nodes</h3><table><tr><th>node</th><th>role</th><th>state</th><th>detail</th>"
        f"<th>clock offset ms</th><th>at</th></tr>{nodes}</table></section>"
    )


def person_page(console: Console, name: str) -> str:
    scores = console.store.scores(name)
    thr = (
        {"face": console.identity.face_threshold, "speaker": console.identity.voice_threshold}
        if console.identity
        else {}
    )
    charts = []
    for kind in ("face", "speaker"):
        pts = [(t, s) for t, k, s in scores if k == kind]
        if not pts:
            continue
        t0, t1 = pts[0][0], max(pts[-1][0], pts[0][0] + 1e-6)
        poly = " ".join(f"{600 * (t - t0) / (t1 - t0):.1f},{120 - 120 * max(0.0, s):.1f}" for t, s in pts)
        ty = 120 - 120 * thr.get(kind, 0.0)
        charts.append(
            f"<h4>{kind} scores ({len(pts)})</h4><svg width=600 height=120 class=scores><line x1=0 x2=600 "
            f'y1="{ty:.1f}" y2="{ty:.1f}" stroke="#dc2626" stroke-dasharray="4"/>'
            f'<polyline points="{poly}" fill="none" stroke="#2563eb"/></svg>'
            f"<div class=muted>dashed: the threshold ({thr.get(kind, 0):.2f})</div>"
        )
    people = console.identity.people() if console.identity else {}
    enrolled = people.get(name, {})
    named = [c for c in console.store.clusters("named") if c.name == name]
    media = "".join(
        f'<img class="crop" src="media/{esc(m)}">'
        if m.endswith(".jpg")
        else f'<audio controls src="media/{esc(m)}"></audio>'
        for c in named
        for m in c.media
    )
    consents = "".join(f"<li>{clock(t)} {esc(d)}</li>" for t, d in console.store.consents(name))
    recs = []
    for r in console.store.recognitions(name):
        m = r["media"]
        thumb = (
            f'<img class="crop" src="media/{esc(m)}">'
            if m.endswith(".jpg")
            else f'<audio controls preload="none" src="media/{esc(m)}"></audio>'
            if m
            else ""
        )
        recs.append(
            f'<tr data-sample="{r["id"]}"><td>{clock(r["time"])}</td><td>{esc(r["room"])}</td><td>{r["kind"]}</td>'
            f'<td>{float(r["score"]):.2f}</td><td>{thumb}</td><td><input id="to-{r["id"]}" placeholder="right name">'
            f"<button class=reassign onclick=\"act('api/samples/{r['id']}/reassign',"
            f'{{name:document.getElementById(&quot;to-{r["id"]}&quot;).value}}).then(()=>location.reload())">'
            "Not them: re-assign</button></td></tr>"
        )
    recognitions = (
        "<h4>Recent recognitions</h4><table><tr><th>time</th><th>room</th><th>kind</th><th>score</th><th></th>"
        f"<th></th></tr>{''.join(recs)}</table>"
        if recs
        else ""
    )
    return f"""<section class=card><h2>{esc(name)}</h2>
<p>enrolled: {esc(", ".join(f"{n} {k}" for k, n in sorted(enrolled.items())) or "not in the gallery")}</p>
{media}<ul>{consents}</ul>{"".join(charts) or "<p class=muted>no recognitions kept</p>"}{recognitions}
<button class=remove onclick="if(confirm('Remove {esc(name)} and everything kept about them?'))
act('api/people/{esc(name)}/remove').then(()=>location.href='./')">Remove {esc(name)} and everything kept</button>
<p id=msg></p></section>"""


# -------------------------------------------------------------------------------------------- app


def make_app(console: Console, access: Access | None = None) -> Starlette:
    """The console's ASGI app over a running ``Console``."""

    async def rooms(request: Request) -> Response:
        return page(request, "Rooms", f'<div id="rooms">{rooms_fragment(console)}</div>', "Rooms")

    async def fragment(request: Request) -> Response:
        which = request.path_params["which"]
        make = {"rooms": rooms_fragment, "inbox": inbox_fragment, "health": health_fragment}.get(which)
        if make is None:
            return Response("no such fragment", 404)
        return HTMLResponse(make(console))

    def filters(request: Request) -> dict[str, Any]:
        q = request.query_params
        before = q.get("before", "")
        if before and not before.isdigit():
            raise ValueError(f"before={before!r}: expected an event sequence number")
        t = q.get("type", "")
        if t and t not in TYPES and not t.isidentifier():
            raise ValueError(f"type={t!r}: not an event type")
        return {
            "before": int(before) if before else None,
            "room": q.get("room", ""),
            "person": q.get("person", ""),
            "type_": t,
        }

    async def timeline(request: Request) -> Response:
        try:
            f = filters(request)
        except ValueError as exc:
            return Response(f"400: {exc}\n", 400)
        rows = await asyncio.to_thread(console.store.events, limit=PAGE_SIZE, **f)
        facets = await asyncio.to_thread(console.store.facets)

        def select(name: str, values: list[str], current: str) -> str:
            opts = "".join(f"<option {'selected' if v == current else ''}>{esc(v)}</option>" for v in values)
            return f'<select name="{name}"><option value="">any {name}</option>{opts}</select>'

        form = (
            f'<form class=card method=get action="timeline">{select("room", facets["room"], f["room"])}'
            f"{select('person', facets['person'], f['person'])}{select('type', facets['type'], f['type_'])}"
            "<button>Filter</button></form>"
        )
        more = ""
        if len(rows) == PAGE_SIZE:
            qs = "&".join(
                f"{k}={esc(v)}" for k, v in (("room", f["room"]), ("person", f["person"]), ("type", f["type_"])) if v
            )
            more = f'<a class=older href="timeline?before={rows[-1]["seq"]}&{qs}">older →</a>'
        live = "1" if f["before"] is None else "0"
        body = (
            f"{form}<section class=card><table><thead><tr><th>time</th><th>room</th><th>type</th><th>who</th>"
            f'<th>score</th><th>what</th><th></th></tr></thead><tbody id="timeline-body" data-live="{live}" '
            f'data-room="{esc(f["room"])}" data-person="{esc(f["person"])}" data-type="{esc(f["type_"])}">'
            f"{''.join(event_row(r) for r in rows)}</tbody></table>{more}</section>"
        )
        return page(request, "Timeline", body, "Timeline")

    async def api_events(request: Request) -> Response:
        try:
            f = filters(request)
            limit = min(500, int(request.query_params.get("limit", PAGE_SIZE)))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        rows = await asyncio.to_thread(console.store.events, limit=limit, **f)
        return JSONResponse({"events": rows, "next": rows[-1]["seq"] if len(rows) == limit else None})

    async def api_rooms(request: Request) -> Response:
        out = {
            room: {
                "people": {
                    p: {"since": h.since, "sources": h.sources, "confidence": h.confidence} for p, h in r.people.items()
                },
                "unknown": r.unknown,
                "cameras": sorted(r.cameras),
            }
            for room, r in console.live.rooms.items()
        }
        return JSONResponse({"rooms": out, "hub": console.live.hub_up})

    async def inbox(request: Request) -> Response:
        body = (
            "<section class=card><button class=undo onclick=\"act('api/undo')\">Undo last</button> <span id=msg></span>"
            "</section>"
            f'<div id="inbox">{inbox_fragment(console)}</div>'
        )
        return page(request, "Unknowns", body, "Unknowns")

    async def health(request: Request) -> Response:
        return page(request, "Health", f'<div id="health">{health_fragment(console)}</div>', "Health")

    async def person(request: Request) -> Response:
        return page(request, request.path_params["name"], person_page(console, request.path_params["name"]), "")

    async def frame(request: Request) -> Response:
        f = console.frames.get(f"{request.path_params['room']}/{request.path_params['camera']}")
        if f is None:
            return Response("no frame from this camera yet", 404)
        return Response(f.data, media_type="image/jpeg", headers={"cache-control": "no-store"})

    async def media(request: Request) -> Response:
        p = console.store.media_path(request.path_params["name"])
        if p is None:
            return Response("no such crop or clip (expired, removed or never kept)", 404)
        return FileResponse(p, headers={"cache-control": "no-store"})

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def cluster_action(request: Request) -> Response:
        cid = int(request.path_params["cid"])
        action = request.path_params["action"]
        data = await body_of(request)
        try:
            if action == "name":
                also = [int(x) for x in data.get("also", []) or []]
                await console.name(cid, str(data.get("name", "")), str(data.get("consent", "")), also)
                return JSONResponse({"done": f"cluster {cid} enrolled as {data.get('name')}"})
            if action == "ignore":
                console.ignore(cid)
                return JSONResponse({"done": f"cluster {cid} ignored"})
            if action == "merge":
                into = int(data.get("into", 0))
                console.merge(cid, into)
                return JSONResponse({"done": f"cluster {cid} merged into {into}"})
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"error": f"unknown action {action!r} (name, ignore, merge)"}, 404)

    async def undo(request: Request) -> Response:
        said = await console.undo()
        return JSONResponse({"done": f"undid {said}" if said else "nothing to undo"})

    async def reassign(request: Request) -> Response:
        data = await body_of(request)
        try:
            await console.reassign(int(request.path_params["sid"]), str(data.get("name", "")))
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"done": f"re-assigned to {data.get('name')}"})

    async def remove(request: Request) -> Response:
        name = request.path_params["name"]
        n = await console.remove_person(name)
        return JSONResponse({"done": f"removed {name} ({n} records)"})

    async def api_clusters(request: Request) -> Response:
        status = request.query_params.get("status", "open")
        out = []
        for c in console.store.clusters(status):
            prop = c.proposal()
            out.append(
                {
                    "id": c.id,
                    "kind": c.kind,
                    "samples": len(c.samples),
                    "name": c.name,
                    "rooms": c.rooms,
                    "proposal": {"person": prop[0], "alone": prop[1], "samples": prop[2]} if prop else None,
                    "similar": [{"cluster": o, "similarity": round(sim, 3)} for o, sim in console.similar(c.id)],
                }
            )
        return JSONResponse({"clusters": out})

    async def live(request: Request) -> Response:
        q = console.listen()

        async def stream() -> AsyncIterator[bytes]:
            try:
                yield f"retry: 1000\nevent: hub\ndata: {json.dumps(console.live.hub_up)}\n\n".encode()
                while True:
                    try:
                        async with asyncio.timeout(15.0):
                            kind, data = await q.get()
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if kind == "event" and isinstance(data, Event):
                        ev = json.loads(to_json(data))
                        ev["seq"] = data.seq
                        payload = {
                            "type": ev.get("type"),
                            "room": data.room,
                            "person": ev.get("person") or ev.get("speaker") or "",
                            "html": event_row(ev),
                        }
                        yield f"event: event\ndata: {json.dumps(payload)}\n\n".encode()
                    else:
                        yield f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()
            finally:
                console.unlisten(q)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"cache-control": "no-store"})

    routes = [
        Route("/", rooms),
        Route("/timeline", timeline),
        Route("/inbox", inbox),
        Route("/health", health),
        Route("/person/{name}", person),
        Route("/fragment/{which}", fragment),
        Route("/api/live", live),
        Route("/api/rooms", api_rooms),
        Route("/api/events", api_events),
        Route("/api/clusters", api_clusters),
        Route("/api/clusters/{cid:int}/{action}", cluster_action, methods=["POST"]),
        Route("/api/undo", undo, methods=["POST"]),
        Route("/api/samples/{sid:int}/reassign", reassign, methods=["POST"]),
        Route("/api/people/{name}/remove", remove, methods=["POST"]),
        Route("/api/frame/{room}/{camera}", frame),
        Route("/media/{name}", media),
    ]
    app = Starlette(routes=routes)
    if access is not None:
        app.add_middleware(AccessMiddleware, access=access)  # type: ignore[arg-type]
    return app


async def serve(console: Console, app: Starlette, host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Run the console and its web server until cancelled."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(console.run(), name="console")
    web = asyncio.create_task(server.serve(), name="console-web")
    try:
        while not server.started and not web.done():
            await asyncio.sleep(0.05)
        if ready is not None:
            ready.set()
        done, _ = await asyncio.wait({task, web}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            t.result()
    finally:
        server.should_exit = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            async with asyncio.timeout(3.0):
                await web
