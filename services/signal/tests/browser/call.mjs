// A real WebRTC call between two browser pages, driven by the signal node's browser
// test (tests/it/browser.rs): headless chromium with fake camera and microphone, each
// page on its own node, ICE relay-only so media must cross the test's coturn.
//
//   node call.mjs <page A url> <page B url> <artifact dir>
//
// Prints one JSON line with what it measured and exits 0, or prints the failure and
// exits 1. Screenshots of both pages land in the artifact dir either way.

import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const [urlA, urlB, out] = process.argv.slice(2);
const WAIT = { timeout: 30_000 };
mkdirSync(out, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox', '--mute-audio'],
});
const pages = [];
const log = [];
try {
  for (const url of [urlA, urlB]) {
    const page = await (await browser.newContext({ viewport: { width: 1100, height: 700 } })).newPage();
    page.on('console', (m) => log.push(`[${pages.length ? 'B' : 'A'}] ${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`[${pages.length ? 'B' : 'A'}] page error: ${e.message}`));
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
    await page.waitForFunction(
      async (p) => {
        const s = await window.meeting.stats(p);
        return s && s.pair && s.pair.state === 'succeeded' && s.video.frames > 0 && s.audio.packets > 0;
      },
      other,
      { ...WAIT, polling: 250 },
    );
    const first = await stats(page, other);
    await page.waitForTimeout(2000); // the interval over which the counters must grow
    const second = await stats(page, other);
    return { first, second };
  };
  const mediaA = await flowing(a, peerB);
  const mediaB = await flowing(b, peerA);
  await a.screenshot({ path: `${out}/page-a.png` });
  await b.screenshot({ path: `${out}/page-b.png` });

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
  console.log(JSON.stringify({ ok: true, peerA, peerB, mediaA, mediaB, mutedText }));
  await browser.close();
  process.exit(0);
} catch (e) {
  for (const [i, page] of pages.entries()) {
    await page.screenshot({ path: `${out}/failure-${'AB'[i]}.png` }).catch(() => {});
  }
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e), log: log.slice(-60) }));
  await browser.close();
  process.exit(1);
}
