// A real WebRTC call between two browser pages, driven by the signal node's browser
// test (tests/browser.rs): headless chromium with fake camera and microphone, each
// page on its own node, ICE relay-only so media must cross the test's coturn.
//
//   node call.mjs <page A url> <page B url> <artifact dir> [<S1 page A url> <S1 page B url>]
//
// The meeting pages call each other through TURN; then page A's connection drops and
// resumes (same peer, the call goes on, B sees no leave); A mutes, turns its camera
// off, chats and leaves, and B shows each. With the two Socket.IO page URLs, the
// Socket.IO flow's pages call each other too.
//
// Prints one JSON line with what it measured and exits 0, or prints the failure and
// exits 1. Screenshots of both pages land in the artifact dir either way.

import { mkdirSync } from 'node:fs';
import { WAIT, launchChromium } from './chromium.mjs';

const [urlA, urlB, out, sioA, sioB] = process.argv.slice(2);
mkdirSync(out, { recursive: true });

const browser = await launchChromium();
const pages = [];
const log = [];

/** Evaluates `fn(arg)` in the page (promises awaited) until `done(value)`; the last value. */
async function until(page, fn, arg, done) {
  const deadline = Date.now() + WAIT.timeout;
  for (;;) {
    const value = await page.evaluate(fn, arg);
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out; last value: ${JSON.stringify(value)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
try {
  for (const url of [urlA, urlB]) {
    const page = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
    page.on('console', (m) => log.push(`[${pages.length ? 'B' : 'A'}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`[${pages.length ? 'B' : 'A'}] page error: ${e.message}`));
    page.on('response', (r) => r.status() >= 400 && log.push(`[${pages.length ? 'B' : 'A'}] ${r.status()} ${r.url()}`));
    await page.goto(url);
    pages.push(page);
  }
  const [a, b] = pages;
  // Both in the room, each listing the other.
  for (const page of pages) await page.waitForFunction(() => window.meeting.state.people.size === 2, null, WAIT);
  const peerA = await a.evaluate(() => window.meeting.peer());
  const peerB = await b.evaluate(() => window.meeting.peer());

  // Media through TURN: the selected pair is relay on both sides, and inbound audio
  // and video keep growing.
  const stats = async (page, other) => page.evaluate((p) => window.meeting.stats(p), other);
  const flowing = async (page, other) => {
    const first = await until(
      page,
      (p) => window.meeting.stats(p),
      other,
      (s) => s && s.pair && s.pair.state === 'succeeded' && s.video.frames > 0 && s.audio.packets > 0,
    );
    await page.waitForTimeout(2000); // the interval over which the counters must grow
    const second = await stats(page, other);
    return { first, second };
  };
  const mediaA = await flowing(a, peerB);
  const mediaB = await flowing(b, peerA);
  await a.screenshot({ path: `${out}/page-a.png` });
  await b.screenshot({ path: `${out}/page-b.png` });

  // Glare: both sides restart ICE at the same moment, so both offer at once; the polite
  // side rolls back and answers, and both end stable with the media still flowing.
  await Promise.all([
    a.evaluate((p) => window.meeting.state.mesh.links.get(p).pc.restartIce(), peerB),
    b.evaluate((p) => window.meeting.state.mesh.links.get(p).pc.restartIce(), peerA),
  ]);
  const glare = [];
  for (const [page, other] of [[a, peerB], [b, peerA]]) {
    glare.push(
      await until(
        page,
        (p) => {
          const l = window.meeting.state.mesh.links.get(p);
          return { signaling: l.pc.signalingState, ice: l.pc.iceConnectionState, trace: l.trace.slice(-6) };
        },
        other,
        (v) => v.signaling === 'stable' && ['connected', 'completed'].includes(v.ice) && v.trace.length > 2,
      ),
    );
  }
  const afterGlare = await flowing(a, peerB);

  // A's connection drops (as a lost network would): it resumes as the same peer, the
  // media goes on, and B never hears A leave.
  await b.evaluate(() => {
    window.heardLeft = [];
    window.meeting.state.client.addEventListener('peer-left', (e) => window.heardLeft.push(e.detail.peer));
  });
  await a.evaluate(() => window.meeting.state.client.ws.close(4000, 'network lost'));
  await a.waitForFunction(() => document.getElementById('status').textContent.includes('reconnected'), null, WAIT);
  const resumedAs = await a.evaluate(() => window.meeting.peer());
  const afterResume = await flowing(b, peerA);
  const leftDuringResume = await b.evaluate(() => window.heardLeft);

  // A mutes: B's list shows it. A turns its camera off: B's tile shows it.
  await a.click('#mic');
  await b.waitForSelector(`#people li[data-peer="${peerA}"][data-audio="off"]`, WAIT);
  await a.click('#cam');
  await b.waitForSelector(`#people li[data-peer="${peerA}"][data-video="off"]`, WAIT);
  const mutedText = await b.textContent(`#people li[data-peer="${peerA}"]`);
  await b.screenshot({ path: `${out}/page-b-a-muted.png` });

  // A chats, then leaves: B hears the message, then sees A gone.
  await a.fill('#chat-text', 'hello from A');
  await a.click('#chat-form button');
  await b.waitForFunction(() => document.querySelector('#chat')?.textContent.includes('hello from A'), null, WAIT);
  await a.click('#leave');
  await b.waitForFunction(
    (p) => !document.querySelector(`#people li[data-peer="${p}"]`) && !document.querySelector(`figure[data-peer="${p}"]`),
    peerA,
    WAIT,
  );
  await b.screenshot({ path: `${out}/page-b-after-a-left.png` });

  // The Socket.IO flow's pages, unchanged client code, through the same TURN.
  let socketio = null;
  if (sioA && sioB) {
    const sio = [];
    for (const url of [sioA, sioB]) {
      const page = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
      page.on('pageerror', (e) => log.push(`[sio] page error: ${e.message}`));
      await page.goto(url);
      sio.push(page);
      pages.push(page);
    }
    const sioStats = async () => {
        const pc = [...window.socketioCall.peers.values()][0];
        if (!pc) return null;
        const report = await pc.getStats();
        const byId = new Map();
        report.forEach((s) => byId.set(s.id, s));
        let pair = null;
        let frames = 0;
        report.forEach((s) => {
          if (s.type === 'transport' && s.selectedCandidatePairId) {
            const p = byId.get(s.selectedCandidatePairId);
            pair = p && { local: byId.get(p.localCandidateId)?.candidateType, remote: byId.get(p.remoteCandidateId)?.candidateType };
          }
          if (s.type === 'inbound-rtp' && s.kind === 'video') frames += s.framesDecoded || 0;
        });
        return { pair, frames };
      };
    socketio = [];
    for (const page of sio) {
      await page.waitForFunction(() => window.socketioCall && window.socketioCall.peers.size > 0, null, WAIT);
      socketio.push(await until(page, sioStats, null, (s) => s && s.pair && s.frames > 0));
    }
    await sio[1].screenshot({ path: `${out}/socketio-b.png` });
  }
  console.log(
    JSON.stringify({
      ok: true,
      peerA,
      peerB,
      mediaA,
      mediaB,
      glare,
      afterGlare,
      resumedAs,
      afterResume,
      leftDuringResume,
      mutedText,
      socketio,
    }),
  );
  await browser.close();
  process.exit(0);
} catch (e) {
  for (const [i, page] of pages.entries()) {
    await page.screenshot({ path: `${out}/failure-${'AB'[i]}.png` }).catch(() => {});
  }
  const links = [];
  for (const page of pages.slice(0, 2)) {
    links.push(
      await page
        .evaluate(() => ({
          self: window.meeting.peer(),
          config: window.meeting.state.mesh?.rtcConfig,
          links: [...(window.meeting.state.mesh?.links.values() || [])].map((l) => ({
            peer: l.peer,
            polite: l.polite,
            signaling: l.pc.signalingState,
            ice: l.pc.iceConnectionState,
            gathering: l.pc.iceGatheringState,
            local: l.pc.localDescription?.type,
            remote: l.pc.remoteDescription?.type,
            trace: l.trace,
          })),
        }))
        .catch((err) => String(err)),
    );
  }
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), links, log: log.slice(-60) }));
  await browser.close();
  process.exit(1);
}
