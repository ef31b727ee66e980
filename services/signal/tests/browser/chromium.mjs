// What the browser tests share: headless Chromium with a fake camera and microphone
// (CHROMIUM names the binary), and the bound on every wait.

import { chromium } from 'playwright-core';

export const WAIT = { timeout: 30_000 };

export function launchChromium() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream', '--no-sandbox', '--mute-audio'],
  });
}
