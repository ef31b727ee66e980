// A mesh call: one RTCPeerConnection per other member, negotiated with the "perfect
// negotiation" pattern (https://w3c.github.io/webrtc-pc/#perfect-negotiation-example):
// both sides may offer at any time; on a collision the polite side rolls back and
// answers, the impolite side ignores the other's offer. Politeness is decided by
// comparing peer ids, so the two sides always disagree. A newcomer calls every member
// already there, whose link is made by that offer, so a join causes no collision;
// renegotiations (an ICE restart after a failure) may collide and are settled so.
//
// Signals travel as `signal` messages of kind `offer`/`answer` (data: the session
// description) and `candidate` (data: the ICE candidate, with its ufrag).

export class Mesh extends EventTarget {
  constructor({ self, send, rtcConfig, stream }) {
    super();
    this.self = self;
    this.send = send;
    this.rtcConfig = rtcConfig;
    this.stream = stream;
    this.links = new Map();
  }

  /** The link to `peer`, made on first use. */
  link(peer) {
    let link = this.links.get(peer);
    if (!link) {
      link = new PeerLink(this, peer, this.self > peer);
      this.links.set(peer, link);
      this.emit('link', { peer, link });
    }
    return link;
  }

  async onSignal(from, kind, data) {
    await this.link(from).onSignal(kind, data);
  }

  drop(peer) {
    const link = this.links.get(peer);
    if (link) {
      link.close();
      this.links.delete(peer);
      this.emit('gone', { peer });
    }
  }

  dropAll() {
    for (const peer of [...this.links.keys()]) this.drop(peer);
  }

  /** Swaps the outgoing track of `kind` on every link (a new camera or microphone). */
  async replaceTrack(kind, track) {
    for (const link of this.links.values()) {
      const sender = link.pc.getSenders().find((s) => s.track && s.track.kind === kind);
      if (sender) await sender.replaceTrack(track);
    }
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

class PeerLink {
  constructor(mesh, peer, polite) {
    this.mesh = mesh;
    this.peer = peer;
    this.polite = polite;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.remoteStream = new MediaStream();
    /** The last signals handled, for diagnosis (shown by the browser test on failure). */
    this.trace = [];
    const pc = new RTCPeerConnection(mesh.rtcConfig);
    this.pc = pc;
    for (const track of mesh.stream.getTracks()) pc.addTrack(track, mesh.stream);

    pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await pc.setLocalDescription();
        this.sendDescription();
      } catch (e) {
        console.warn('offer failed', e);
      } finally {
        this.makingOffer = false;
      }
    };
    // No end-of-candidates marker: one from a generation that a glare rolled back can
    // arrive after the next generation's description and would end that one's
    // candidates too. Candidates carry their ufrag, so a stale one is refused.
    pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.mesh.send(this.peer, 'candidate', candidate.toJSON());
    };
    pc.oniceconnectionstatechange = () => {
      if (pc.iceConnectionState === 'failed') pc.restartIce();
    };
    pc.onconnectionstatechange = () => this.mesh.emit('state', { peer, state: pc.connectionState });
    pc.ontrack = ({ track }) => {
      this.remoteStream.addTrack(track);
      this.mesh.emit('track', { peer, stream: this.remoteStream });
    };
  }

  sendDescription() {
    const d = this.pc.localDescription;
    this.mesh.send(this.peer, d.type, { type: d.type, sdp: d.sdp });
  }

  async onSignal(kind, data) {
    const pc = this.pc;
    this.trace.push(`${kind} in ${pc.signalingState}${this.makingOffer ? ' making' : ''}`);
    if (this.trace.length > 40) this.trace.shift();
    try {
      if (kind === 'offer' || kind === 'answer') {
        const offerCollision = data.type === 'offer' && (this.makingOffer || pc.signalingState !== 'stable');
        this.ignoreOffer = !this.polite && offerCollision;
        if (this.ignoreOffer) return;
        await pc.setRemoteDescription(data);
        if (data.type === 'offer') {
          await pc.setLocalDescription();
          this.sendDescription();
        }
      } else if (kind === 'candidate' && data) {
        try {
          await pc.addIceCandidate(data);
        } catch (e) {
          if (!this.ignoreOffer) throw e;
        }
      }
    } catch (e) {
      this.trace.push(`${kind} failed: ${e.message}`);
      console.warn(`signal ${kind} from ${this.peer} failed`, e);
    }
  }

  /** What getStats() says about the media: the selected candidate pair's types and
   * inbound audio/video counters (summed over the link's streams of each kind). */
  async stats() {
    const report = await this.pc.getStats();
    const out = { pair: null, audio: { bytes: 0, packets: 0 }, video: { bytes: 0, frames: 0 } };
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    report.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) {
        const pair = byId.get(s.selectedCandidatePairId);
        if (pair) {
          out.pair = {
            local: byId.get(pair.localCandidateId)?.candidateType,
            remote: byId.get(pair.remoteCandidateId)?.candidateType,
            state: pair.state,
          };
        }
      } else if (s.type === 'inbound-rtp' && s.kind === 'audio') {
        out.audio.bytes += s.bytesReceived || 0;
        out.audio.packets += s.packetsReceived || 0;
      } else if (s.type === 'inbound-rtp' && s.kind === 'video') {
        out.video.bytes += s.bytesReceived || 0;
        out.video.frames += s.framesDecoded || 0;
      }
    });
    return out;
  }

  close() {
    this.pc.close();
  }
}
