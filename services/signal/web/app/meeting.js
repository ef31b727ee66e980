// The meeting page: camera and microphone (with a device picker), the room over the
// native protocol, a mesh call with every other member, the participant list with
// who is muted or has the camera off (member metadata), chat (broadcast), leave, and
// resume when the connection drops or the page reloads (the resume token is kept in
// sessionStorage; on `pagehide` the page closes with 4001 `reloading`, so a reload
// comes back as the same peer and a closed tab leaves within RELOAD_GRACE_MS).

import { SignalClient } from './signal-client.js';
import { Mesh } from './mesh.js';
import { videoTile as tile } from './tiles.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = decodeURIComponent(location.pathname.replace(/^\/meeting\//, '').replace(/\/$/, ''));
// Where this tab keeps what a reload needs to come back as the same member.
const RESUME_KEY = `signal-resume:${room}`;

const state = {
  client: null,
  mesh: null,
  stream: new MediaStream(),
  people: new Map(), // peer id -> { name, meta }
  meta: { audio: true, video: true },
  left: false,
};
// For tests and the curious: the page's state and the media statistics per peer.
window.meeting = {
  state,
  peer: () => state.client && state.client.peer,
  stats: (peer) => state.mesh.links.get(peer)?.stats(),
};

/** What a reload needs: the latest resume token, the name and the media state. */
function remember() {
  if (state.left || !state.client?.token) return;
  sessionStorage.setItem(RESUME_KEY, JSON.stringify({ token: state.client.token, name: state.name, meta: state.meta }));
}

function remembered() {
  try {
    return JSON.parse(sessionStorage.getItem(RESUME_KEY) || 'null');
  } catch {
    return null;
  }
}

function setStatus(text) {
  $('status').textContent = text;
}

async function rtcConfig() {
  let config = { iceUrl: null, iceTransportPolicy: 'all' };
  try {
    config = { ...config, ...(await (await fetch('/app/config.json')).json()) };
  } catch {
    // Served by a node: the file is always there; keep the defaults otherwise.
  }
  let iceServers = [];
  if (config.iceUrl) {
    try {
      // Same origin through the load balancer (its cookies go along), or a configured URL.
      const response = await fetch(config.iceUrl);
      if (response.ok) iceServers = (await response.json()).iceServers || [];
      else console.warn(`ICE servers: ${config.iceUrl} answered ${response.status}`);
    } catch (e) {
      console.warn('ICE servers unavailable; host candidates only', e);
    }
  }
  const policy = params.get('ice') === 'relay' ? 'relay' : config.iceTransportPolicy;
  return { iceServers, iceTransportPolicy: policy };
}

async function openMedia() {
  const audioId = $('mic-select').value;
  const videoId = $('camera-select').value;
  const constraints = {
    audio: audioId ? { deviceId: { exact: audioId } } : true,
    video: videoId ? { deviceId: { exact: videoId } } : true,
  };
  try {
    return await navigator.mediaDevices.getUserMedia(constraints);
  } catch (e) {
    setStatus(`camera or microphone unavailable (${e.name}); joining without them`);
    return new MediaStream();
  }
}

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [select, kind] of [
    [$('camera-select'), 'videoinput'],
    [$('mic-select'), 'audioinput'],
  ]) {
    const chosen = select.value;
    select.replaceChildren(
      ...devices
        .filter((d) => d.kind === kind)
        .map((d, i) => new Option(d.label || `${kind === 'videoinput' ? 'Camera' : 'Microphone'} ${i + 1}`, d.deviceId)),
    );
    if (chosen) select.value = chosen;
  }
}

async function switchDevice(kind) {
  const select = kind === 'video' ? $('camera-select') : $('mic-select');
  const fresh = await navigator.mediaDevices.getUserMedia({ [kind]: { deviceId: { exact: select.value } } });
  const track = fresh.getTracks()[0];
  const old = state.stream.getTracks().find((t) => t.kind === kind);
  track.enabled = kind === 'video' ? state.meta.video : state.meta.audio;
  if (old) {
    state.stream.removeTrack(old);
    old.stop();
  }
  state.stream.addTrack(track);
  await state.mesh.replaceTrack(kind, track);
}

// ---- tiles and the participant list ----

function render(peer) {
  const person = state.people.get(peer);
  const self = peer === state.client.peer;
  const name = person ? person.name : peer;
  const meta = person ? person.meta || {} : {};
  const muted = meta.audio === false;
  const cameraOff = meta.video === false;
  const badges = `${muted ? ' · muted' : ''}${cameraOff ? ' · camera off' : ''}`;

  const fig = tile(peer);
  fig.querySelector('figcaption').textContent = `${name}${self ? ' (you)' : ''}${badges}`;
  fig.classList.toggle('camera-off', cameraOff);

  let item = document.querySelector(`#people li[data-peer="${CSS.escape(peer)}"]`);
  if (!item) {
    item = document.createElement('li');
    item.dataset.peer = peer;
    $('people').append(item);
  }
  item.dataset.audio = muted ? 'off' : 'on';
  item.dataset.video = cameraOff ? 'off' : 'on';
  item.textContent = `${name}${self ? ' (you)' : ''}${badges}`;
}

function addPerson(info) {
  state.people.set(info.peer, { name: info.name || 'Guest', meta: info.meta || {} });
  render(info.peer);
}

function removePerson(peer) {
  state.people.delete(peer);
  document.querySelector(`figure[data-peer="${CSS.escape(peer)}"]`)?.remove();
  document.querySelector(`#people li[data-peer="${CSS.escape(peer)}"]`)?.remove();
  state.mesh.drop(peer);
}

function chatLine(from, text) {
  const li = document.createElement('li');
  const who = document.createElement('strong');
  who.textContent = from === state.client.peer ? 'You' : state.people.get(from)?.name || 'Someone';
  li.append(who, document.createTextNode(`: ${text}`));
  $('chat').append(li);
  li.scrollIntoView({ block: 'end' });
}

// ---- the room ----

function showSelf() {
  const self = state.client.peer;
  state.mesh.self = self;
  addPerson({ peer: self, name: state.name, meta: state.meta });
  const video = tile(self).querySelector('video');
  video.muted = true;
  video.srcObject = state.stream;
}

async function join() {
  const joined = await state.client.request({ type: 'join', room, name: state.name, meta: state.meta });
  showSelf();
  for (const p of joined.peers) {
    addPerson(p);
    state.mesh.link(p.peer);
  }
  setStatus(`in ${room}`);
}

/** Back after a reload as the same member: nobody saw it leave; the calls start anew. */
function rejoined(others) {
  showSelf();
  for (const p of others) {
    addPerson(p);
    // Its old connection died with the page: the other side drops it, then this offer makes the new one.
    sendSignal(p.peer, 'hello', {});
    state.mesh.drop(p.peer); // a link a held signal may have made meanwhile
    state.mesh.link(p.peer);
  }
  setStatus(`in ${room} (reloaded)`);
}

function wire(client) {
  client.addEventListener('peer-joined', ({ detail }) => {
    // The newcomer calls: its offer makes the link here (no glare on every join).
    if (detail.room === room) addPerson(detail.peer);
  });
  client.addEventListener('peer-left', ({ detail }) => {
    if (detail.room === room) removePerson(detail.peer);
  });
  client.addEventListener('peer-updated', ({ detail }) => {
    if (detail.room !== room) return;
    const person = state.people.get(detail.peer.peer);
    if (person) {
      person.meta = detail.peer.meta || {};
      render(detail.peer.peer);
    }
  });
  client.addEventListener('signal', ({ detail }) => {
    if (detail.room !== room) return;
    // The member reloaded its page: its old connection is gone, a new offer follows.
    if (detail.kind === 'hello') state.mesh.drop(detail.from);
    else state.mesh.onSignal(detail.from, detail.kind, detail.data);
  });
  client.addEventListener('token', () => remember());
  client.addEventListener('broadcast', ({ detail }) => {
    if (detail.room === room && detail.kind === 'chat' && typeof detail.data?.text === 'string') {
      chatLine(detail.from, detail.data.text);
    }
  });
  client.addEventListener('room-closed', ({ detail }) => {
    if (detail.room === room) end(`The meeting was closed (${detail.reason}).`);
  });
  client.addEventListener('error', ({ detail }) => setStatus(`error: ${detail.code}: ${detail.message}`));
  client.addEventListener('connection', ({ detail }) => {
    setStatus(detail.state === 'resumed' ? `in ${room} (reconnected)` : 'connection lost; reconnecting…');
  });
  client.addEventListener('resumed', ({ detail }) => {
    // Same peer, same room: media kept flowing; bring the list up to date.
    const here = detail.rooms.find((r) => r.room === room);
    if (!here) return rejoin();
    const listed = new Set(here.peers.map((p) => p.peer));
    for (const peer of [...state.people.keys()]) {
      if (peer !== client.peer && !listed.has(peer)) removePerson(peer);
    }
    for (const p of here.peers) if (!state.people.has(p.peer)) addPerson(p);
  });
  client.addEventListener('reset', () => rejoin());
}

/** The resume was refused: a new peer joins afresh and negotiates again. */
async function rejoin() {
  if (state.left) return;
  setStatus('rejoining…');
  for (const peer of [...state.people.keys()]) removePerson(peer);
  state.mesh.dropAll();
  await join();
}

function sendSignal(to, kind, data) {
  state.client.send({ type: 'signal', room, to, kind, data });
}

async function toggle(kind) {
  state.meta = { ...state.meta, [kind]: !state.meta[kind] };
  for (const t of state.stream.getTracks()) if (t.kind === kind) t.enabled = state.meta[kind];
  $('mic').textContent = state.meta.audio ? 'Mute' : 'Unmute';
  $('cam').textContent = state.meta.video ? 'Camera off' : 'Camera on';
  $('mic').setAttribute('aria-pressed', String(!state.meta.audio));
  $('cam').setAttribute('aria-pressed', String(!state.meta.video));
  const person = state.people.get(state.client.peer);
  if (person) person.meta = state.meta;
  render(state.client.peer);
  remember();
  await state.client.request({ type: 'update', room, meta: state.meta });
}

async function leave() {
  state.left = true;
  try {
    await state.client.request({ type: 'leave', room });
  } finally {
    end('You left the meeting.');
  }
}

function end(message) {
  state.left = true;
  sessionStorage.removeItem(RESUME_KEY);
  state.mesh.dropAll();
  state.client.close();
  for (const t of state.stream.getTracks()) t.stop();
  document.body.classList.add('ended');
  $('ended-text').textContent = message;
  $('ended').hidden = false;
  setStatus('left');
}

async function start(event, saved) {
  event?.preventDefault();
  state.name = saved ? saved.name : $('name').value.trim().slice(0, 50) || 'Guest';
  if (saved) state.meta = { ...state.meta, ...saved.meta };
  localStorage.setItem('signal-name', state.name);
  $('lobby').hidden = true;
  $('call').hidden = false;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const client = new SignalClient(`${scheme}://${location.host}/ws`);
  state.client = client;
  // The mesh gets its media and ICE servers below; no link is made before then.
  state.mesh = new Mesh({ self: null, send: sendSignal, rtcConfig: {}, stream: new MediaStream() });
  state.mesh.addEventListener('track', ({ detail }) => {
    const video = tile(detail.peer).querySelector('video');
    if (video.srcObject !== detail.stream) video.srcObject = detail.stream;
  });
  state.mesh.addEventListener('state', ({ detail }) => {
    tile(detail.peer).dataset.state = detail.state;
  });
  wire(client);
  // After a reload, resume first: the node holds the member only RELOAD_GRACE_MS.
  const resuming = saved
    ? client.resume(saved.token).then((r) => {
        window.meeting.resumedAt = Date.now();
        return r;
      })
    : null;
  setStatus('starting camera…');
  state.stream = await openMedia();
  for (const t of state.stream.getTracks()) t.enabled = state.meta[t.kind] !== false;
  await listDevices();
  state.mesh.stream = state.stream;
  state.mesh.rtcConfig = await rtcConfig();
  setStatus('connecting…');
  if (resuming) {
    const { resumed, rooms } = await resuming;
    const here = resumed && rooms.find((r) => r.room === room);
    if (here) return rejoined(here.peers);
  } else {
    await client.connect();
  }
  await join();
}

function init() {
  if (!room || room.length > 100) {
    document.body.textContent = 'No meeting id in the address.';
    return;
  }
  document.title = `${room} · meeting`;
  $('room-title').textContent = room;
  $('name').value = params.get('name') || localStorage.getItem('signal-name') || '';
  $('lobby-form').addEventListener('submit', (e) =>
    start(e).catch((err) => setStatus(`could not join: ${err.code || ''} ${err.message}`)),
  );
  $('mic').addEventListener('click', () => toggle('audio'));
  $('cam').addEventListener('click', () => toggle('video'));
  $('leave').addEventListener('click', () => leave());
  $('camera-select').addEventListener('change', () => switchDevice('video'));
  $('mic-select').addEventListener('change', () => switchDevice('audio'));
  $('copy-link').addEventListener('click', () => navigator.clipboard?.writeText(`${location.origin}/meeting/${encodeURIComponent(room)}`));
  $('chat-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = $('chat-text').value.trim().slice(0, 500);
    if (!text || !state.client) return;
    state.client.send({ type: 'broadcast', room, kind: 'chat', data: { text } });
    chatLine(state.client.peer, text);
    $('chat-text').value = '';
  });
  // Leaving the page: a reload resumes (see remember), a closed tab leaves shortly.
  window.addEventListener('pagehide', () => {
    if (state.client && !state.left) state.client.suspend();
  });
  // Back from the back-forward cache, the suspended connection is gone: start again.
  window.addEventListener('pageshow', (e) => {
    if (e.persisted) location.reload();
  });
  const saved = remembered();
  if (saved?.token) {
    $('name').value = saved.name;
    start(null, saved).catch((err) => setStatus(`could not rejoin: ${err.code || ''} ${err.message}`));
    return;
  }
  if (params.get('autojoin') === '1' && $('name').value) $('lobby-form').requestSubmit();
}

init();
