// The interview-room call as its Socket.IO clients make it: join-room, then the
// newcomer offers to every existing user; answers and ICE candidates come back by
// target user id. Nothing here knows it talks to this cluster rather than the
// Socket.IO server it replaces.

/* global io */
import { videoTile } from './tiles.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const peers = new Map(); // user id -> RTCPeerConnection
let socket;
let stream;
let roomId;

function status(text) {
  $('status').textContent = text;
}

function tile(userId, name) {
  const fig = videoTile(userId);
  if (!document.querySelector(`#people li[data-peer="${CSS.escape(userId)}"]`)) {
    const li = document.createElement('li');
    li.dataset.peer = userId;
    $('people').append(li);
  }
  if (name) {
    fig.querySelector('figcaption').textContent = name;
    document.querySelector(`#people li[data-peer="${CSS.escape(userId)}"]`).textContent = name;
  }
  return fig;
}

function connection(userId) {
  let pc = peers.get(userId);
  if (pc) return pc;
  const policy = params.get('ice') === 'relay' ? 'relay' : 'all';
  pc = new RTCPeerConnection({ iceServers: window.iceServers || [], iceTransportPolicy: policy });
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.onicecandidate = ({ candidate }) => {
    if (candidate) socket.emit('ice-candidate', { targetUserId: userId, candidate, roomId });
  };
  pc.ontrack = ({ streams }) => {
    tile(userId).querySelector('video').srcObject = streams[0];
  };
  peers.set(userId, pc);
  return pc;
}

async function call(user) {
  tile(user.id, user.name);
  const pc = connection(user.id);
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  socket.emit('offer', { targetUserId: user.id, offer, roomId });
}

async function iceServers() {
  try {
    const config = await (await fetch('/app/config.json')).json();
    const answer = await fetch(config.iceUrl);
    return answer.ok ? (await answer.json()).iceServers || [] : [];
  } catch {
    return [];
  }
}

async function join(event) {
  event.preventDefault();
  roomId = $('room').value.trim();
  const userName = $('name').value.trim();
  $('lobby').hidden = true;
  $('call').hidden = false;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch {
    stream = new MediaStream();
  }
  window.iceServers = await iceServers();
  const me = tile('me', `${userName} (you)`);
  me.querySelector('video').muted = true;
  me.querySelector('video').srcObject = stream;

  socket = io({ transports: ['websocket'] });
  socket.on('connect', () => {
    status(`connected as ${socket.id}`);
    socket.emit('join-room', { roomId, userName, userRole: 'candidate' });
  });
  socket.on('existing-users', (users) => users.forEach((u) => call(u)));
  socket.on('user-joined', (u) => tile(u.userId, u.userName));
  socket.on('offer', async ({ fromUserId, offer }) => {
    const pc = connection(fromUserId);
    await pc.setRemoteDescription(offer);
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    socket.emit('answer', { targetUserId: fromUserId, answer, roomId });
  });
  socket.on('answer', ({ fromUserId, answer }) => peers.get(fromUserId)?.setRemoteDescription(answer));
  socket.on('ice-candidate', ({ fromUserId, candidate }) => peers.get(fromUserId)?.addIceCandidate(candidate));
  socket.on('user-left', ({ userId }) => {
    peers.get(userId)?.close();
    peers.delete(userId);
    document.querySelectorAll(`[data-peer="${CSS.escape(userId)}"]`).forEach((e) => e.remove());
  });
  socket.on('error', (e) => status(`error: ${e.message}`));
}

$('room').value = params.get('room') || `meet-${Math.random().toString(36).slice(2, 8)}`;
$('name').value = params.get('name') || localStorage.getItem('signal-name') || '';
$('lobby-form').addEventListener('submit', join);
if (params.get('autojoin') === '1' && $('name').value) $('lobby-form').requestSubmit();
// For tests and the curious: the calls by socket id, and the socket itself.
window.socketioCall = { peers, socket: () => socket };
