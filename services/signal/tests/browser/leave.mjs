// Goodbyes and reloads as a person makes them, driven by the signal node's browser
// test (tests/browser.rs): headless chromium opens the node's own pages, two members
// in a meeting, and measures what the one who stays sees.
//
//   node leave.mjs <node base url> <artifact dir>
//
// - meeting page (native protocol): a reload comes back as the same peer, and the other
//   page hears neither a leave nor a join, and gets the reloaded page's video again; a
//   closed tab is heard leaving, and how soon;
// - Socket.IO page: a reload's old socket id is heard leaving, and how soon; a closed
//   tab likewise.
//
// Prints one JSON line with what it measured and exits 0, or prints the failure and
// exits 1. Latencies are milliseconds from the moment the test closed or reloaded the
// page to the moment the other page's handler ran (one clock: the same machine).

import { mkdirSync } from 'node:fs';
import { WAIT, launchChromium } from './chromium.mjs';

const [base, out] = process.argv.slice(2);
/** Long enough past RELOAD_GRACE_MS (700 ms by default) for a late leave to show. */
const QUIET_MS = 2_000;
mkdirSync(out, { recursive: true });

const browser = await launchChromium();
const pages = [];
const log = [];

async function open(url, label) {
  const page = await (await browser.newContext({ viewport: { width: 900, height: 600 } })).newPage();
  page.on('console', (m) => m.type() !== 'debug' && log.push(`[${label}] ${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`[${label}] page error: ${e.message}`));
  await page.goto(url);
  pages.push(page);
  return page;
}

/** Records, in `page`, every event of `kinds` with the time it arrived. */
async function listenNative(page) {
  await page.evaluate(() => {
    window.heard = [];
    for (const kind of ['peer-left', 'peer-joined']) {
      window.meeting.state.client.addEventListener(kind, (e) =>
        window.heard.push({ kind, peer: e.detail.peer.peer || e.detail.peer, at: Date.now() }),
      );
    }
  });
}

async function listenSocketio(page) {
  await page.evaluate(() => {
    window.heard = [];
    const socket = window.socketioCall.socket();
    for (const kind of ['user-left', 'user-joined']) {
      socket.on(kind, (e) => window.heard.push({ kind, peer: e.userId, at: Date.now() }));
    }
  });
}

const heard = (page) => page.evaluate(() => window.heard);
const heardFrom = async (page, kind, peer) => {
  await page.waitForFunction(([k, p]) => window.heard.some((h) => h.kind === k && h.peer === p), [kind, peer], WAIT);
  return (await heard(page)).find((h) => h.kind === kind && h.peer === peer);
};
const videoFrames = (page, peer) => page.evaluate(async (p) => (await window.meeting.stats(p))?.video?.frames ?? 0, peer);

try {
  // ---- the meeting page ----
  const meeting = `${base}/meeting/goodbyes`;
  const a = await open(`${meeting}?name=Ann&autojoin=1`, 'A');
  const b = await open(`${meeting}?name=Bob&autojoin=1`, 'B');
  for (const page of [a, b]) await page.waitForFunction(() => window.meeting.state.people.size === 2, null, WAIT);
  const peerA = await a.evaluate(() => window.meeting.peer());
  await b.waitForFunction(async (p) => ((await window.meeting.stats(p))?.video?.frames ?? 0) > 0, peerA, WAIT);
  await listenNative(b);

  // A reloads: back as the same peer; B hears nothing, and gets A's video again.
  const reloadedAt = Date.now();
  await a.reload();
  await a.waitForFunction(() => document.getElementById('status').textContent.includes('reloaded'), null, WAIT);
  const reloadedAs = await a.evaluate(() => window.meeting.peer());
  const backAfterMs = Date.now() - reloadedAt;
  const resumedAfterMs = (await a.evaluate(() => window.meeting.resumedAt)) - reloadedAt;
  const framesBefore = await videoFrames(b, peerA);
  await b.waitForFunction(
    async ([p, before]) => {
      const link = window.meeting.state.mesh.links.get(p);
      const stats = link && (await window.meeting.stats(p));
      return link && link.pc.connectionState === 'connected' && (stats?.video?.frames ?? 0) > 0 && stats.video.frames !== before;
    },
    [peerA, framesBefore],
    WAIT,
  );
  await b.waitForTimeout(QUIET_MS);
  const heardDuringReload = await heard(b);
  await b.screenshot({ path: `${out}/reload-b.png` });

  // A closes its tab: B hears A leave.
  const closedAt = Date.now();
  await a.close({ runBeforeUnload: true });
  const left = await heardFrom(b, 'peer-left', peerA);
  const nativeCloseMs = left.at - closedAt;
  await b.waitForFunction((p) => !document.querySelector(`#people li[data-peer="${p}"]`), peerA, WAIT);

  // ---- the Socket.IO page ----
  const sio = `${base}/app/socketio.html?room=sio-goodbyes&autojoin=1`;
  const c = await open(`${sio}&name=Cy`, 'C');
  const d = await open(`${sio}&name=Di`, 'D');
  await c.waitForFunction(() => window.socketioCall.socket()?.connected, null, WAIT);
  const firstIdC = await c.evaluate(() => window.socketioCall.socket().id);
  await d.waitForFunction(() => window.socketioCall.socket()?.connected, null, WAIT);
  await d.waitForFunction(() => window.socketioCall.peers.size > 0, null, WAIT);
  await listenSocketio(d);

  // C reloads: its old socket id leaves at once (the new page is a new socket).
  const sioReloadedAt = Date.now();
  await c.reload();
  const oldLeft = await heardFrom(d, 'user-left', firstIdC);
  const sioReloadMs = oldLeft.at - sioReloadedAt;
  await c.waitForFunction(() => window.socketioCall.socket()?.connected, null, WAIT);
  const secondIdC = await c.evaluate(() => window.socketioCall.socket().id);
  await heardFrom(d, 'user-joined', secondIdC);

  // C closes its tab: D hears it leave.
  const sioClosedAt = Date.now();
  await c.close({ runBeforeUnload: true });
  const sioLeft = await heardFrom(d, 'user-left', secondIdC);
  const sioCloseMs = sioLeft.at - sioClosedAt;

  console.log(
    JSON.stringify({
      ok: true,
      peerA,
      reloadedAs,
      backAfterMs,
      resumedAfterMs,
      heardDuringReload,
      nativeCloseMs,
      socketio: { firstIdC, secondIdC, reloadMs: sioReloadMs, closeMs: sioCloseMs },
    }),
  );
  await browser.close();
  process.exit(0);
} catch (e) {
  for (const [i, page] of pages.entries()) {
    if (!page.isClosed()) await page.screenshot({ path: `${out}/leave-failure-${i}.png` }).catch(() => {});
  }
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), log: log.slice(-60) }));
  await browser.close();
  process.exit(1);
}
