// Tandem browser client: one `join()` turns the Tandem wire protocol (version 1) into a call.
//
//   import { join } from "/tandem.js";
//   const call = await join("wss://example.com", { session: "room-1", token, name: "Ada" });
//   call.on("remotestream", ({ stream }) => { video.srcObject = stream; });
//
// The protocol logic lives in `SessionCore`, a state machine that takes events (socket opened, message
// received, media state changed, time passed) and returns actions; `Call` performs those actions with
// a WebSocket and RTCPeerConnections. The pure parts are exported for tests and for apps that need them.
// No dependencies and no build step.

/** Library version, sent in `join.device.client`. */
export const VERSION = "1.0.0";

/** Providers a client can take part in. `sfu` needs the app to bring its SFU SDK (see the `sfu` event). */
export const PROVIDERS = ["p2p", "relay", "sfu"];

/** Target bitrates of the 720/480/360/240 ladder, in bits per second. */
export const LADDER_BITRATES = { 720: 1_500_000, 480: 800_000, 360: 450_000, 240: 200_000 };

/** The close codes the client acts on (PROTOCOL.md section 4); any other close is resumed. */
const CLOSE = { normal: 1000, draining: 4000, unauthorized: 4401, forbidden: 4403, replaced: 4409 };
/** Close codes after which reconnecting cannot help. */
const FATAL_CLOSE = new Map([
    [CLOSE.unauthorized, "unauthorized"], [CLOSE.forbidden, "forbidden"], [CLOSE.replaced, "replaced"],
]);
/** Join errors that end the attempt; anything else during a join is retried. */
const FATAL_JOIN_ERRORS = new Set([
    "unauthorized", "forbidden", "session_full", "provider_unavailable", "bad_message", "already_joined",
]);
const MAX_FUTURE_SIGNALS = 256;

/** An error with a stable `code`: a protocol error code, or one of the client's own. */
export class TandemError extends Error {
    /** @param {string} code @param {string} message @param {object} [extra] */
    constructor(code, message, extra = {}) {
        super(message);
        this.name = "TandemError";
        this.code = code;
        Object.assign(this, extra);
    }
}

// MARK: Pure helpers

/**
 * Exponential backoff with jitter, for reconnecting a dropped socket.
 * `next()` gives the delay before the next attempt; `reset()` after a success.
 */
export class Backoff {
    /** @param {{baseMs?: number, maxMs?: number, factor?: number, jitter?: number, random?: () => number}} [o] */
    constructor({ baseMs = 300, maxMs = 10_000, factor = 2, jitter = 0.3, random = Math.random } = {}) {
        Object.assign(this, { baseMs, maxMs, factor, jitter, random });
        this.attempt = 0;
    }
    /** @returns {number} milliseconds */
    next() {
        const raw = Math.min(this.maxMs, this.baseMs * this.factor ** this.attempt);
        this.attempt += 1;
        // Jitter spreads the clients of a restarted server instead of having them return at once.
        const spread = raw * this.jitter * (this.random() * 2 - 1);
        return Math.max(0, Math.round(Math.min(this.maxMs, raw + spread)));
    }
    reset() { this.attempt = 0; }
}

/** The signaling URL for a server address: `wss://host[:port]` gets `/v1/signal`, `https:` becomes `wss:`. */
export function signalURL(address) {
    const url = new URL(address);
    if (url.protocol === "https:") url.protocol = "wss:";
    else if (url.protocol === "http:") url.protocol = "ws:";
    if (url.protocol !== "wss:" && url.protocol !== "ws:") {
        throw new TandemError("bad_url", `not a WebSocket or HTTP URL: ${address}`);
    }
    if (url.pathname === "/" || url.pathname === "") url.pathname = "/v1/signal";
    return url.toString();
}

/**
 * Parses one server frame. Returns the message object, or a TandemError for a frame that is not a
 * protocol message (the caller reports it and carries on).
 */
export function parseServerMessage(text) {
    if (typeof text !== "string") return new TandemError("bad_message", "the server sent a binary frame");
    let message;
    try {
        message = JSON.parse(text);
    } catch {
        return new TandemError("bad_message", "the server sent a frame that is not JSON");
    }
    if (message === null || typeof message !== "object" || Array.isArray(message) || typeof message.type !== "string") {
        return new TandemError("bad_message", "the server sent a message without a type");
    }
    return message;
}

/**
 * The send parameters for a `video` recommendation: a bitrate cap and a scale that brings the source
 * down to at most `maxHeight` lines.
 */
export function videoEncoding(maxHeight, sourceHeight) {
    const rung = LADDER_BITRATES[maxHeight] ? maxHeight : 240;
    const scale = sourceHeight > rung ? sourceHeight / rung : 1;
    return { maxBitrate: LADDER_BITRATES[rung], scaleResolutionDownBy: scale };
}

/**
 * Summarises a `getStats()` report into the fields of a `health` message, using the previous summary
 * for rates. `report` is anything with `forEach` over stats objects (an RTCStatsReport or a Map).
 */
export function summarizeStats(report, previous = null, now = Date.now()) {
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    let pair = null;
    const inbound = { packetsReceived: 0, packetsLost: 0, bytesReceived: 0, framesDecoded: 0, jitterMs: undefined, frameHeight: undefined };
    let bytesSent = 0;
    for (const s of byId.values()) {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = byId.get(s.selectedCandidatePairId) ?? pair;
        if (s.type === "candidate-pair" && !pair && (s.selected || (s.nominated && s.state === "succeeded"))) pair = s;
        if (s.type === "inbound-rtp") {
            inbound.packetsReceived += s.packetsReceived ?? 0;
            inbound.packetsLost += Math.max(0, s.packetsLost ?? 0);
            inbound.bytesReceived += s.bytesReceived ?? 0;
            if (typeof s.jitter === "number") inbound.jitterMs = Math.max(inbound.jitterMs ?? 0, s.jitter * 1000);
            if (s.kind === "video") {
                inbound.framesDecoded += s.framesDecoded ?? 0;
                if (typeof s.frameHeight === "number") inbound.frameHeight = s.frameHeight;
            }
        }
        if (s.type === "outbound-rtp") bytesSent += s.bytesSent ?? 0;
    }
    const summary = {
        at: now,
        packetsReceived: inbound.packetsReceived,
        packetsLost: inbound.packetsLost,
        bytesReceived: inbound.bytesReceived,
        bytesSent,
        framesDecoded: inbound.framesDecoded,
    };
    if (pair) {
        if (typeof pair.currentRoundTripTime === "number") summary.rttMs = round(pair.currentRoundTripTime * 1000);
        const local = byId.get(pair.localCandidateId);
        const remote = byId.get(pair.remoteCandidateId);
        // The path is relayed when either end is a relay candidate; otherwise the local type tells.
        const types = [local?.candidateType, remote?.candidateType];
        summary.candidateType = types.includes("relay") ? "relay" : (local?.candidateType ?? undefined);
        if (typeof pair.availableOutgoingBitrate === "number") summary.availableKbps = round(pair.availableOutgoingBitrate / 1000);
    }
    if (inbound.jitterMs !== undefined) summary.jitterMs = round(inbound.jitterMs);
    if (inbound.frameHeight !== undefined) summary.frameHeight = inbound.frameHeight;
    if (previous && now > previous.at) {
        const seconds = (now - previous.at) / 1000;
        const received = summary.packetsReceived - previous.packetsReceived;
        const lost = summary.packetsLost - previous.packetsLost;
        if (received >= 0 && lost >= 0 && received + lost > 0) summary.lossPct = round((100 * lost) / (received + lost));
        const sent = summary.bytesSent - previous.bytesSent;
        if (sent >= 0) summary.sendKbps = round((sent * 8) / 1000 / seconds);
        const got = summary.bytesReceived - previous.bytesReceived;
        if (got >= 0) summary.receiveKbps = round((got * 8) / 1000 / seconds);
        summary.flowing = summary.packetsReceived > previous.packetsReceived;
    } else {
        summary.flowing = false;
    }
    // What the uplink could carry is the sender's estimate when the browser gives one, else what it
    // sent. Nothing sent yet is no measurement: a 0 would read as a dead link and cut the video ladder.
    const bitrate = summary.availableKbps ?? summary.sendKbps;
    if (bitrate > 0) summary.bitrateKbps = bitrate;
    return summary;
}

/** The `health` fields of a stats summary. */
export function healthFields(summary) {
    const fields = {};
    if (!summary) return fields;
    for (const key of ["rttMs", "lossPct", "jitterMs", "bitrateKbps", "frameHeight", "candidateType"]) {
        if (summary[key] !== undefined && summary[key] !== null) fields[key] = summary[key];
    }
    return fields;
}

function round(x) { return Math.round(x * 10) / 10; }

function isObject(x) { return x !== null && typeof x === "object" && !Array.isArray(x); }

// MARK: The protocol state machine

/**
 * One participant's view of a Tandem session, as a state machine: each event method returns a list of
 * actions for the I/O layer. It never touches a socket, a timer or a peer connection, and time is
 * passed in, so it runs the same in node's test runner as in a browser.
 *
 * Actions (`do`): `send` {message}; `emit` {event, detail}; `welcome` {message}; `fail` {error};
 * `open` {path}; `restart` {path, epoch}; `closePath` {path}; `signal` {path, data}; `show` {path};
 * `report` {message} (a health message to complete with stats and send); `video` {maxHeight};
 * `reconnect` {delayMs}; `closeSocket` {code, reason}.
 */
export class SessionCore {
    /**
     * @param {{session: string, token?: string, name?: string, providers?: string[], device?: object,
     *          reconnectForMs?: number, maxJoinAttempts?: number}} options
     * @param {{backoff?: Backoff}} [deps]
     */
    constructor(options, { backoff } = {}) {
        this.options = options;
        this.backoff = backoff ?? new Backoff();
        /** 'idle' | 'joining' | 'joined' | 'reconnecting' | 'closed' */
        this.phase = "idle";
        this.participant = null;
        this.resumeKey = null;
        this.lastSeq = 0;
        this.provider = null;
        this.peers = new Map();
        this.heartbeat = { intervalMs: 5000, timeoutMs: 15000 };
        /** Media paths by id: {id, epoch, provider, remote, polite, media, flowing}. */
        this.paths = new Map();
        this.currentPath = null;
        this.nextPathId = 1;
        this.future = [];
        this.lastReceivedAt = 0;
        this.disconnectedAt = null;
        this.attempts = 0;
        this.everJoined = false;
        this.openedAt = 0;
        this.lastPingAt = 0;
        /** Signals a path made while the socket was down, sent after the resume. */
        this.outbox = [];
        this.state = "connecting";
        this.videoMaxHeight = null;
        this.closeReason = null;
    }

    /** The WebSocket opened: join, or resume when this participant exists already. */
    opened(now) {
        this.lastReceivedAt = now;
        this.openedAt = now;
        const join = { type: "join", session: this.options.session };
        if (this.options.token) join.token = this.options.token;
        if (this.options.name) join.name = this.options.name;
        if (this.options.providers) join.providers = this.options.providers;
        if (this.options.device) join.device = this.options.device;
        if (this.participant && this.resumeKey) {
            join.resume = { participant: this.participant, key: this.resumeKey, lastSeq: this.lastSeq };
        } else {
            this.lastSeq = 0;
        }
        this.phase = "joining";
        return [{ do: "send", message: join }];
    }

    /** A message from the server. */
    received(message, now) {
        if (this.phase === "closed") return [];
        this.lastReceivedAt = now;
        const freshWelcome = message.type === "welcome" && !message.resumed;
        if (Number.isInteger(message.seq) && message.seq > 0 && !freshWelcome) {
            // A resumed socket replays what we missed; anything at or below lastSeq was handled already.
            if (message.seq <= this.lastSeq) return [];
            this.lastSeq = message.seq;
        }
        const actions = this.#handle(message, now);
        return this.#withState(actions);
    }

    #handle(m, now) {
        switch (m.type) {
            case "welcome": return this.#welcome(m, now);
            case "peer-joined": return this.#peerJoined(m.peer);
            case "peer-state": return this.#peerState(m.peer, m.state);
            case "peer-left": return this.#peerLeft(m.peer, m.reason);
            case "signal": return this.#signal(m.from, m.data);
            case "provider": return this.#provider(m, m.reason ?? "join");
            case "quality": return [{ do: "emit", event: "quality", detail: { participant: m.participant, score: m.score, level: m.level, self: m.participant === this.participant } }];
            case "video": {
                if (!LADDER_BITRATES[m.maxHeight]) return [];
                this.videoMaxHeight = m.maxHeight;
                return [{ do: "video", maxHeight: m.maxHeight }, { do: "emit", event: "video", detail: { maxHeight: m.maxHeight, reason: m.reason } }];
            }
            case "alert": return [{ do: "emit", event: "alert", detail: { kind: m.kind, participant: m.participant, value: m.value } }];
            case "pong": return [];
            case "error": return this.#error(m);
            default: return [];
        }
    }

    #welcome(m, now) {
        if (typeof m.participant !== "string" || !isObject(m.provider)) {
            return this.#fail(new TandemError("bad_message", "the server's welcome lacks a participant or provider"));
        }
        const actions = [];
        const fresh = !m.resumed || m.participant !== this.participant;
        if (fresh) {
            // A new participant (first join, or a refused resume): nothing of the old one carries over.
            for (const id of [...this.paths.keys()]) actions.push(...this.#closePath(id));
            for (const id of this.peers.keys()) actions.push({ do: "emit", event: "peer", detail: { peer: { id }, change: "left", reason: "rejoined" } });
            this.peers.clear();
            this.provider = null;
            this.future = [];
            this.outbox = [];
            this.lastSeq = Number.isInteger(m.seq) ? m.seq : 0;
        }
        this.participant = m.participant;
        this.resumeKey = m.resumeKey ?? null;
        if (isObject(m.heartbeat)) {
            const { intervalMs, timeoutMs } = m.heartbeat;
            if (intervalMs > 0) this.heartbeat.intervalMs = intervalMs;
            if (timeoutMs > 0) this.heartbeat.timeoutMs = timeoutMs;
        }
        this.phase = "joined";
        this.everJoined = true;
        this.lastPingAt = now;
        this.attempts = 0;
        this.disconnectedAt = null;
        this.backoff.reset();
        for (const peer of Array.isArray(m.peers) ? m.peers : []) {
            if (!isObject(peer) || typeof peer.id !== "string") continue;
            const known = this.peers.get(peer.id);
            this.peers.set(peer.id, { id: peer.id, name: peer.name ?? null, state: known?.state ?? "active" });
            if (!known) actions.push({ do: "emit", event: "peer", detail: { peer: { id: peer.id, name: peer.name ?? null }, change: "joined" } });
        }
        actions.push({ do: "welcome", message: m });
        actions.push(...this.#provider(m.provider, "join"));
        // What our paths said while the socket was down, if it is still for this epoch.
        const held = this.outbox;
        this.outbox = [];
        for (const message of held) if (message.data.epoch === this.provider?.epoch) actions.push({ do: "send", message });
        if (!fresh) actions.push(...this.#report());
        return actions;
    }

    #peerJoined(peer) {
        if (!isObject(peer) || typeof peer.id !== "string") return [];
        this.peers.set(peer.id, { id: peer.id, name: peer.name ?? null, state: "active" });
        const actions = [{ do: "emit", event: "peer", detail: { peer: { id: peer.id, name: peer.name ?? null }, change: "joined" } }];
        if (this.provider?.name === "p2p" && !this.#current()) actions.push(...this.#openPath(peer.id));
        return actions;
    }

    #peerState(id, state) {
        const peer = this.peers.get(id);
        if (!peer || (state !== "reconnecting" && state !== "active")) return [];
        peer.state = state;
        return [{ do: "emit", event: "peer", detail: { peer: { id, name: peer.name }, change: state } }];
    }

    #peerLeft(id, reason) {
        const peer = this.peers.get(id);
        if (!peer) return [];
        this.peers.delete(id);
        const actions = [{ do: "emit", event: "peer", detail: { peer: { id, name: peer.name }, change: "left", reason } }];
        for (const [pathId, path] of [...this.paths]) {
            if (path.remote === id) actions.push(...this.#closePath(pathId));
        }
        // A peer that left mid-call: the next one starts from a clean path.
        if (this.provider?.name === "p2p") {
            const next = [...this.peers.keys()][0];
            if (next && !this.#current()) actions.push(...this.#openPath(next));
        }
        return actions;
    }

    #signal(from, data) {
        if (!isObject(data) || !Number.isInteger(data.epoch) || typeof from !== "string") return [];
        if (!this.provider || data.epoch > this.provider.epoch) {
            // The peer heard of the next epoch before we did: keep it until our `provider` arrives.
            if (this.future.length < MAX_FUTURE_SIGNALS) this.future.push({ from, data });
            return [];
        }
        if (data.epoch < this.provider.epoch) return [];
        let path = this.#current();
        const actions = [];
        if (!path && this.#remoteFor(from)) {
            actions.push(...this.#openPath(from));
            path = this.#current();
        }
        if (!path || path.remote !== from) return actions;
        actions.push({ do: "signal", path: path.id, data });
        return actions;
    }

    /** Which remote this participant talks to on the current provider, if `from` is it. */
    #remoteFor(from) {
        switch (this.provider?.name) {
            case "p2p": return this.peers.has(from);
            case "relay": return from === "server";
            default: return false;
        }
    }

    #provider(p, reason) {
        if (!isObject(p) || typeof p.name !== "string" || !Number.isInteger(p.epoch)) return [];
        const previous = this.provider;
        if (previous && p.epoch <= previous.epoch) {
            if (p.epoch === previous.epoch && p.name === previous.name) {
                // The same epoch again (a resumed welcome): refresh what may have changed.
                previous.polite = p.polite ?? previous.polite;
                if (Array.isArray(p.iceServers)) previous.iceServers = p.iceServers;
            }
            return [];
        }
        this.sfuMedia = undefined;
        this.provider = {
            name: p.name, epoch: p.epoch, room: p.room ?? this.options.session, polite: p.polite === true,
            iceServers: Array.isArray(p.iceServers) ? p.iceServers : [], sfu: isObject(p.sfu) ? p.sfu : null,
        };
        const actions = [{
            do: "emit", event: "provider",
            detail: { name: p.name, epoch: p.epoch, previous: p.previous ?? previous?.name ?? null, reason, polite: this.provider.polite },
        }];
        const current = this.#current();
        const remote = this.#desiredRemote();
        if (current && previous && previous.name === p.name && current.remote === remote && remote !== null && remote !== "server") {
            // Same peer-to-peer provider, next epoch: restart ICE on the path we have instead of building
            // another. (The server's relay gives every epoch fresh legs, so a relay path is rebuilt below.)
            current.epoch = p.epoch;
            current.polite = this.provider.polite;
            current.media = "connecting";
            actions.push({ do: "restart", path: current.id, epoch: p.epoch, polite: current.polite, iceServers: this.provider.iceServers });
        } else {
            // Make before break: the old path keeps carrying media until the new one does.
            this.currentPath = null;
            if (p.name === "sfu") {
                actions.push({ do: "emit", event: "sfu", detail: { room: this.provider.room, epoch: p.epoch, ...(this.provider.sfu ?? {}) } });
            }
            if (remote !== null) actions.push(...this.#openPath(remote));
            if (!this.currentPath) {
                // Nothing of ours will carry the new epoch's media (alone, or the app's SFU SDK does).
                for (const id of [...this.paths.keys()]) if (id !== this.currentPath) actions.push(...this.#closePath(id));
            }
        }
        const waiting = this.future;
        this.future = [];
        for (const { from, data } of waiting) {
            if (data.epoch >= p.epoch) actions.push(...this.#signal(from, data));
        }
        actions.push(...this.#report());
        return actions;
    }

    /** The remote peer id our path should reach on the current provider, or null. */
    #desiredRemote() {
        switch (this.provider?.name) {
            case "p2p": return this.peers.keys().next().value ?? null;
            case "relay": return "server";
            default: return null;
        }
    }

    #openPath(remote) {
        const id = this.nextPathId++;
        const path = {
            id, epoch: this.provider.epoch, provider: this.provider.name, remote, polite: remote === "server" ? true : this.provider.polite,
            media: "new", flowing: false,
        };
        this.paths.set(id, path);
        this.currentPath = id;
        return [{ do: "open", path: { ...path, iceServers: this.provider.iceServers } }];
    }

    #closePath(id) {
        if (!this.paths.delete(id)) return [];
        if (this.currentPath === id) this.currentPath = null;
        return [{ do: "closePath", path: id }];
    }

    #current() { return this.currentPath === null ? null : this.paths.get(this.currentPath) ?? null; }

    #error(m) {
        const error = new TandemError(m.code ?? "internal", m.message ?? "error", { ref: m.ref });
        // The answer to our join (seq 0, ref join), as opposed to an older error replayed by a resume.
        if (this.phase === "joining" && (m.ref === "join" || m.seq === 0)) {
            if (m.code === "resume_failed") {
                // The server no longer knows us: join afresh as a new participant.
                this.participant = null;
                this.resumeKey = null;
                return [{ do: "emit", event: "error", detail: error }, ...this.opened(this.lastReceivedAt)];
            }
            if (FATAL_JOIN_ERRORS.has(m.code)) return this.#fail(error);
            // Anything else (internal, rate_limited, a draining node): try again on a new socket.
            return [{ do: "emit", event: "error", detail: error }, { do: "closeSocket", code: CLOSE.normal, reason: m.code ?? "retry", reconnect: true }];
        }
        return [{ do: "emit", event: "error", detail: error }];
    }

    #fail(error) {
        const actions = [];
        for (const id of [...this.paths.keys()]) actions.push(...this.#closePath(id));
        this.phase = "closed";
        this.closeReason = error.code;
        actions.push({ do: "fail", error }, { do: "closeSocket", code: CLOSE.normal, reason: error.code });
        return actions;
    }

    /** The socket closed (or never opened: code 1006). */
    closed(code, reason, now) {
        if (this.phase === "closed") return [];
        const fatal = FATAL_CLOSE.get(code);
        if (fatal) {
            return this.#withState(this.#fail(new TandemError(fatal, reason || `the server closed the connection (${code})`, { closeCode: code })));
        }
        if (this.disconnectedAt === null) this.disconnectedAt = now;
        this.attempts += 1;
        const neverJoined = !this.everJoined;
        const limit = this.options.maxJoinAttempts ?? 5;
        if (neverJoined && this.attempts >= limit) {
            return this.#withState(this.#fail(new TandemError("unreachable", `could not join after ${this.attempts} attempts (last close ${code})`, { closeCode: code })));
        }
        if (!neverJoined && now - this.disconnectedAt > (this.options.reconnectForMs ?? 120_000)) {
            return this.#withState(this.#fail(new TandemError("unreachable", "the signaling connection did not come back", { closeCode: code })));
        }
        this.phase = "reconnecting";
        // A draining server asks for an immediate resume, possibly on another node.
        const delayMs = code === CLOSE.draining ? 0 : this.backoff.next();
        return this.#withState([{ do: "reconnect", delayMs, code }]);
    }

    /** Called every heartbeat interval: keeps the socket alive, notices a dead one, reports health. */
    tick(now) {
        if (this.phase === "joining" && now - this.openedAt > (this.options.joinTimeoutMs ?? 10_000)) {
            return [{ do: "closeSocket", code: CLOSE.normal, reason: "no welcome", reconnect: true }];
        }
        if (this.phase !== "joined") return [];
        // A socket that has heard nothing for two intervals is dead: the server would drop us at the timeout.
        const deadAfter = Math.min(2 * this.heartbeat.intervalMs, (2 * this.heartbeat.timeoutMs) / 3);
        if (now - this.lastReceivedAt > deadAfter) {
            return [{ do: "closeSocket", code: CLOSE.normal, reason: "heartbeat lost", reconnect: true }];
        }
        if (now - this.lastPingAt < this.heartbeat.intervalMs) return [];
        this.lastPingAt = now;
        return [{ do: "send", message: { type: "ping", t: now } }, ...this.#report()];
    }

    /** A media path's state changed or it was sampled. `flowing`: remote media arrived since the last sample. */
    pathUpdate(id, { media, flowing }) {
        const path = this.paths.get(id);
        if (!path) return [];
        const actions = [];
        const isCurrent = id === this.currentPath;
        // Media that stops arriving (the peer's network died) stops counting as connected.
        const rising = flowing === true && !path.flowing;
        if (flowing !== undefined) path.flowing = flowing;
        if (rising) {
            if (isCurrent) {
                actions.push({ do: "show", path: id });
                // The new path carries media: now the old ones can go.
                for (const other of [...this.paths.keys()]) if (other !== id) actions.push(...this.#closePath(other));
            }
        }
        if (media && media !== path.media) {
            path.media = media;
            if (media === "failed" || media === "closed") path.flowing = false;
            if (isCurrent) actions.push(...this.#report());
        }
        return this.#withState(actions);
    }

    /** A track arrived on a path: show it at once when no other path is showing media. */
    pathTrack(id) {
        const path = this.paths.get(id);
        if (!path || id !== this.currentPath) return [];
        const othersFlowing = [...this.paths.values()].some((p) => p.id !== id && p.flowing);
        return othersFlowing ? [] : [{ do: "show", path: id }];
    }

    /** A path wants to send a signal; only the current epoch's path may. */
    pathSignal(id, data) {
        const path = this.paths.get(id);
        if (!path || id !== this.currentPath || this.phase === "closed" || !this.provider) return [];
        const message = { type: "signal", to: path.remote, data: { ...data, epoch: this.provider.epoch } };
        if (this.phase !== "joined") {
            if (this.outbox.length < MAX_FUTURE_SIGNALS) this.outbox.push(message);
            return [];
        }
        return [{ do: "send", message }];
    }

    /** The app's SFU SDK changed state (new, connecting, connected, failed). */
    sfuUpdate(media) {
        if (this.sfuMedia === media) return [];
        this.sfuMedia = media;
        return this.#withState(this.provider?.name === "sfu" ? this.#report() : []);
    }

    /** Tells the server that media failed on the current provider (the app's own verdict, or the demo's button). */
    reportFailure() {
        const path = this.#current();
        if (path) path.media = "failed";
        if (!this.provider || this.phase !== "joined") return [];
        return this.#withState([{ do: "send", message: { type: "health", epoch: this.provider.epoch, provider: this.provider.name, media: "failed" } }]);
    }

    /** The app leaves: tell the server, close everything. */
    leave() {
        if (this.phase === "closed") return [];
        const actions = [];
        if (this.phase === "joined") actions.push({ do: "send", message: { type: "leave" } });
        for (const id of [...this.paths.keys()]) actions.push(...this.#closePath(id));
        this.phase = "closed";
        this.closeReason = "left";
        actions.push({ do: "closeSocket", code: CLOSE.normal, reason: "left" });
        return this.#withState(actions);
    }

    /** The media state the server should hear for the current epoch. */
    currentMedia() {
        const path = this.#current();
        if (path) return path.media;
        if (this.provider?.name === "sfu") return this.sfuMedia ?? "connecting";
        return "new";
    }

    #report() {
        if (this.phase !== "joined" || !this.provider) return [];
        const path = this.#current();
        return [{
            do: "report", path: path?.id ?? null,
            message: { type: "health", epoch: this.provider.epoch, provider: this.provider.name, media: this.currentMedia() },
        }];
    }

    /** The call's state as the app sees it: connecting, waiting, connected, reconnecting, closed or failed. */
    deriveState() {
        if (this.phase === "closed") return this.closeReason === "left" ? "closed" : "failed";
        if (this.phase === "reconnecting" || (this.phase === "joining" && this.everJoined)) return "reconnecting";
        if (this.phase !== "joined") return "connecting";
        if (this.peers.size === 0) return "waiting";
        if (this.provider?.name === "sfu") return this.sfuMedia === "connected" ? "connected" : "connecting";
        const showing = [...this.paths.values()].some((p) => p.flowing || (p.id === this.currentPath && p.media === "connected"));
        return showing ? "connected" : "connecting";
    }

    #withState(actions) {
        const state = this.deriveState();
        if (state !== this.state) {
            this.state = state;
            actions.push({ do: "emit", event: "state", detail: { state } });
        }
        return actions;
    }
}

// MARK: Media paths

/**
 * One RTCPeerConnection to one remote (a peer, or the server's relay), with perfect negotiation:
 * the polite side rolls back its own offer on a collision, the impolite side ignores the other's.
 */
class PeerPath {
    constructor({ id, remote, polite, iceServers, epoch }, { localStream, RTCPeerConnection: PC, iceTransportPolicy, onSignal, onTrack, onMedia, log }) {
        Object.assign(this, { id, remote, polite, epoch, onSignal, onTrack, onMedia, log });
        this.makingOffer = false;
        this.ignoreOffer = false;
        this.pendingCandidates = [];
        this.closed = false;
        this.stream = null;
        this.previousStats = null;
        const config = { iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
        if (iceTransportPolicy) config.iceTransportPolicy = iceTransportPolicy;
        this.pc = new PC(config);
        const tracks = localStream ? localStream.getTracks() : [];
        for (const track of tracks) this.pc.addTrack(track, localStream);
        for (const kind of ["audio", "video"]) {
            if (!tracks.some((t) => t.kind === kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
        }
        /** The last signals in and out, for diagnosing a negotiation. */
        this.trace = [];
        const send = onSignal;
        this.onSignal = (data) => { this.#note(`out ${data.kind}`); send(data); };
        this.pc.onnegotiationneeded = () => this.#negotiate();
        this.pc.onicecandidate = ({ candidate }) => {
            if (this.closed) return;
            if (candidate && candidate.candidate) this.onSignal({ kind: "candidate", candidate: candidate.toJSON() });
            else if (!candidate) this.onSignal({ kind: "end-of-candidates" });
        };
        this.pc.ontrack = ({ track, streams }) => {
            if (!this.stream) this.stream = streams[0] ?? new MediaStream();
            if (!this.stream.getTracks().includes(track)) this.stream.addTrack(track);
            this.onTrack(this);
        };
        this.pc.onconnectionstatechange = () => this.onMedia(this, PeerPath.mediaState(this.pc.connectionState));
    }

    #note(text) {
        this.trace.push(`${text} (${this.pc.signalingState})`);
        if (this.trace.length > 60) this.trace.shift();
    }

    static mediaState(connectionState) {
        switch (connectionState) {
            case "connected": return "connected";
            case "failed": return "failed";
            case "closed": return "closed";
            case "new": return "new";
            default: return "connecting"; // connecting, disconnected: ICE may still recover
        }
    }

    async #negotiate() {
        if (this.closed) return;
        if (this.polite && this.remote !== "server" && !this.pc.remoteDescription && !this.waitedForOffer) {
            // The first offer is the impolite side's. A polite offer rolled back mid-gathering (the
            // usual glare when both sides open at once) leaves Chromium without local candidates, so
            // wait for the other side's offer, and offer only if none comes.
            this.waitedForOffer = true;
            this.offerTimer = setTimeout(() => { if (!this.pc.remoteDescription) this.#negotiate(); }, 3000);
            return;
        }
        try {
            this.makingOffer = true;
            await this.pc.setLocalDescription();
            if (this.pc.localDescription?.type === "offer") this.onSignal({ kind: "offer", sdp: this.pc.localDescription.sdp });
        } catch (error) {
            this.log("offer failed", error);
        } finally {
            this.makingOffer = false;
        }
    }

    /**
     * A signal from the remote for this path's epoch. Signals are handled one after another, in the
     * order sent: an answer and the offer right behind it (the relay renegotiating) must not interleave.
     */
    receive(data) {
        this.inbox = (this.inbox ?? Promise.resolve()).then(() => this.#handle(data));
        return this.inbox;
    }

    async #handle(data) {
        if (this.closed) return;
        this.#note(`in ${data.kind}`);
        try {
            if (data.kind === "offer" || data.kind === "answer") {
                if (typeof data.sdp !== "string") return;
                const collision = data.kind === "offer" && (this.makingOffer || this.pc.signalingState !== "stable");
                this.ignoreOffer = !this.polite && collision;
                if (this.ignoreOffer) return;
                await this.pc.setRemoteDescription({ type: data.kind, sdp: data.sdp });
                const pending = this.pendingCandidates.splice(0);
                for (const candidate of pending) await this.pc.addIceCandidate(candidate).catch(() => {});
                if (data.kind === "offer") {
                    await this.pc.setLocalDescription();
                    this.onSignal({ kind: "answer", sdp: this.pc.localDescription.sdp });
                }
            } else if (data.kind === "candidate" && isObject(data.candidate)) {
                if (!this.pc.remoteDescription) {
                    // The remote's candidates can outrun its description: in a glare the impolite side
                    // ignores the polite side's offer, and the candidates it gathered for that offer stay
                    // valid for the answer that follows (same ICE credentials). Keep them until then.
                    if (this.pendingCandidates.length < 200) this.pendingCandidates.push(data.candidate);
                    return;
                }
                try {
                    await this.pc.addIceCandidate(data.candidate);
                } catch (error) {
                    if (!this.ignoreOffer) throw error;
                }
            } else if (data.kind === "end-of-candidates") {
                if (this.pc.remoteDescription) await this.pc.addIceCandidate().catch(() => {});
            } else if (data.kind === "restart" && !this.polite) {
                if (this.pc.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
                this.pc.restartIce();
            }
        } catch (error) {
            this.log(`signal ${data.kind} failed`, error);
        }
    }

    /** Next epoch on the same provider: the impolite side restarts ICE; the polite one asks it to. */
    async restart(epoch, polite, iceServers) {
        this.epoch = epoch;
        this.polite = this.remote === "server" ? true : polite;
        try {
            if (iceServers) this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers });
        } catch (error) {
            this.log("new ICE servers refused", error);
        }
        if (this.polite) {
            this.onSignal({ kind: "restart" });
            return;
        }
        try {
            // An offer of the old epoch will never be answered (its answer is stale now): withdraw it,
            // or restartIce() would wait for a stable state that never comes.
            if (this.pc.signalingState === "have-local-offer") await this.pc.setLocalDescription({ type: "rollback" });
        } catch (error) {
            this.log("rollback failed", error);
        }
        this.pc.restartIce();
    }

    async sample(now) {
        if (this.closed) return null;
        const summary = summarizeStats(await this.pc.getStats(), this.previousStats, now);
        this.previousStats = summary;
        return summary;
    }

    async applyVideo(maxHeight) {
        for (const sender of this.pc.getSenders()) {
            if (sender.track?.kind !== "video") continue;
            const source = sender.track.getSettings().height ?? 720;
            const { maxBitrate, scaleResolutionDownBy } = videoEncoding(maxHeight, source);
            const parameters = sender.getParameters();
            if (!parameters.encodings?.length) parameters.encodings = [{}];
            parameters.encodings[0].maxBitrate = maxBitrate;
            parameters.encodings[0].scaleResolutionDownBy = scaleResolutionDownBy;
            try {
                await sender.setParameters(parameters);
            } catch (error) {
                this.log("video parameters refused", error);
            }
        }
    }

    close() {
        if (this.closed) return;
        this.closed = true;
        clearTimeout(this.offerTimer);
        this.pc.onnegotiationneeded = this.pc.onicecandidate = this.pc.ontrack = this.pc.onconnectionstatechange = null;
        this.pc.close();
    }
}

// MARK: The call

/**
 * A joined session. Events (listen with `on(type, fn)`, which returns an unsubscribe function, or
 * `addEventListener(type, e => e.detail)`):
 * - `state` {state}: connecting, waiting (alone), connected (media flowing), reconnecting, closed, failed
 * - `remotestream` {stream, peer, provider, epoch}: show this stream (a new one after a switch)
 * - `provider` {name, epoch, previous, reason}: the session moved; the client follows on its own
 * - `peer` {peer: {id, name}, change: joined|left|reconnecting|active, reason?}
 * - `quality` {participant, score, level, self}; `video` {maxHeight, reason} (already applied to the sender)
 * - `alert` {kind, participant, value}; `stats` (a summary of the current path every second)
 * - `sfu` {provider, url, token, room, epoch}: join this room with the SFU's own SDK, then call `setSfuMedia`
 * - `error` (a TandemError; non-fatal unless `state` becomes `failed`)
 * Events raised during the join (before `join()` resolves) reach only handlers given as `options.on`;
 * afterwards `call.provider`, `call.peers` and `call.state` tell where things stand.
 */
export class Call extends EventTarget {
    constructor(address, options, env = {}) {
        super();
        this.url = signalURL(address);
        this.options = options;
        this.env = {
            WebSocket: env.WebSocket ?? globalThis.WebSocket,
            RTCPeerConnection: env.RTCPeerConnection ?? globalThis.RTCPeerConnection,
            now: env.now ?? (() => Date.now()),
        };
        const device = { client: `tandem.js/${VERSION}`, ...(options.device ?? {}) };
        this.core = new SessionCore({ ...options, device }, { backoff: options.backoff });
        this.localStream = options.localStream ?? null;
        this.paths = new Map();
        this.socket = null;
        this.stats = null;
        this.remoteStream = null;
        /** The server's last `welcome` (its `server.version` and `node` tell which node serves the call). */
        this.welcome = null;
        this.log = options.log ?? (() => {});
        // Handlers given to join() see the events raised while joining too (the first provider, the peers present).
        for (const [type, handler] of Object.entries(options.on ?? {})) {
            if (typeof handler === "function") this.on(type, handler);
        }
        this.#joined = new Promise((resolve, reject) => { this.#settle = { resolve, reject }; });
        this.#joined.catch(() => {});
    }

    #joined;
    #settle;
    #heartbeatTimer = null;
    #statsTimer = null;
    #reconnectTimer = null;

    /** This participant's id (it changes if the server refuses a resume and the call joins afresh). */
    get participant() { return this.core.participant; }
    /** {name, epoch, polite, iceServers, room, sfu} of the session's current provider. */
    get provider() { return this.core.provider; }
    /** The other participants: [{id, name, state}]. */
    get peers() { return [...this.core.peers.values()].map((p) => ({ ...p })); }
    /** connecting, waiting, connected, reconnecting, closed or failed. */
    get state() { return this.core.state; }

    /** Subscribes to an event; the handler gets the event's detail. Returns an unsubscribe function. */
    on(type, handler) {
        const listener = (event) => handler(event.detail);
        this.addEventListener(type, listener);
        return () => this.removeEventListener(type, listener);
    }

    /** Resolves once the server has welcomed this participant; rejects with a TandemError if it refuses. */
    start() {
        this.#connect();
        this.#statsTimer = setInterval(() => this.#sampleAll(), 1000);
        this.#heartbeatTimer = setInterval(() => this.#run(this.core.tick(this.env.now())), 1000);
        return this.#joined.then(() => this);
    }

    /** Leaves the session: the others see `peer-left` at once. */
    leave() {
        this.#run(this.core.leave());
        this.#settle.reject(new TandemError("left", "left before the server welcomed this call"));
        this.#stop();
    }

    /** Reports a media failure on the current provider, which moves the whole session to the next one. */
    reportMediaFailure() { this.#run(this.core.reportFailure()); }

    /** On the `sfu` provider, the app tells the call how its SFU SDK is doing (new, connecting, connected, failed). */
    setSfuMedia(media) { this.#run(this.core.sfuUpdate(media)); }

    /** Closes the signaling socket as a network failure would (for tests and demos of resume). */
    dropSignaling() { this.socket?.close(3000, "dropped by the app"); }

    #connect() {
        this.#reconnectTimer = null;
        let socket;
        try {
            socket = new this.env.WebSocket(this.url);
        } catch (error) {
            this.#run(this.core.closed(1006, String(error), this.env.now()));
            return;
        }
        this.socket = socket;
        socket.onopen = () => {
            if (this.socket !== socket) return;
            this.#run(this.core.opened(this.env.now()));
        };
        socket.onmessage = (event) => {
            if (this.socket !== socket) return;
            const message = parseServerMessage(event.data);
            if (message instanceof TandemError) { this.#emit("error", message); return; }
            this.#run(this.core.received(message, this.env.now()));
        };
        socket.onclose = (event) => {
            if (this.socket !== socket) return;
            this.socket = null;
            this.#run(this.core.closed(event.code, event.reason, this.env.now()));
        };
        socket.onerror = () => {};
    }

    #send(message) {
        if (this.socket?.readyState === 1) this.socket.send(JSON.stringify(message));
    }

    #emit(type, detail) {
        this.dispatchEvent(new CustomEvent(type, { detail }));
    }

    #run(actions) {
        for (const action of actions) {
            switch (action.do) {
                case "send": this.#send(action.message); break;
                case "emit": this.#emit(action.event, action.detail); break;
                case "welcome":
                    this.welcome = action.message;
                    this.#settle.resolve();
                    break;
                case "fail":
                    this.#settle.reject(action.error);
                    this.#emit("error", action.error);
                    this.#stop();
                    break;
                case "open": this.#openPath(action.path); break;
                case "restart": this.paths.get(action.path)?.restart(action.epoch, action.polite, action.iceServers); break;
                case "closePath": {
                    const path = this.paths.get(action.path);
                    this.paths.delete(action.path);
                    // Closing a peer connection can take a while; keep it off the message path.
                    if (path) setTimeout(() => path.close(), 0);
                    break;
                }
                case "signal": this.paths.get(action.path)?.receive(action.data); break;
                case "show": this.#show(action.path); break;
                case "report": this.#report(action.path, action.message); break;
                case "video": for (const path of this.paths.values()) path.applyVideo(action.maxHeight); break;
                case "reconnect":
                    clearTimeout(this.#reconnectTimer);
                    this.#reconnectTimer = setTimeout(() => this.#connect(), action.delayMs);
                    break;
                case "closeSocket": {
                    const socket = this.socket;
                    if (!socket) break;
                    if (action.reconnect) {
                        // Treat it as dropped now rather than waiting for the close handshake of a dead socket.
                        this.socket = null;
                        socket.close(action.code, action.reason);
                        this.#run(this.core.closed(1006, action.reason, this.env.now()));
                    } else {
                        socket.close(action.code, action.reason);
                    }
                    break;
                }
            }
        }
    }

    #openPath(spec) {
        let path;
        try {
            path = this.#makePath(spec);
        } catch (error) {
            // A configuration the browser refuses (say, a TURN entry without credentials): the path
            // failed, which the server hears and answers by moving the session on.
            this.#emit("error", new TandemError("media_failed", `cannot open a peer connection: ${error.message ?? error}`, { cause: error }));
            queueMicrotask(() => this.#run(this.core.pathUpdate(spec.id, { media: "failed" })));
            return;
        }
        this.paths.set(spec.id, path);
        if (this.core.videoMaxHeight) path.applyVideo(this.core.videoMaxHeight);
    }

    #makePath(spec) {
        const path = new PeerPath(spec, {
            localStream: this.localStream,
            RTCPeerConnection: this.env.RTCPeerConnection,
            iceTransportPolicy: this.options.iceTransportPolicy,
            log: this.log,
            onSignal: (data) => this.#run(this.core.pathSignal(path.id, data)),
            onTrack: () => this.#run(this.core.pathTrack(path.id)),
            onMedia: (_, media) => this.#run(this.core.pathUpdate(path.id, { media })),
        });
        return path;
    }

    #show(id) {
        const path = this.paths.get(id);
        if (!path?.stream || this.remoteStream === path.stream) return;
        this.remoteStream = path.stream;
        const peer = path.remote === "server" ? null : (this.core.peers.get(path.remote) ?? { id: path.remote });
        this.#emit("remotestream", { stream: path.stream, peer, provider: this.core.paths.get(id)?.provider, epoch: this.core.provider?.epoch });
    }

    #report(id, message) {
        // The sampler's last one-second summary: a fresh sample here would measure a random sliver of time.
        const summary = id !== null && id === this.core.currentPath ? this.stats : null;
        this.#send({ ...message, ...healthFields(summary) });
    }

    async #sampleAll() {
        for (const [id, path] of this.paths) {
            let summary;
            try {
                summary = await path.sample(this.env.now());
            } catch {
                continue;
            }
            if (!summary) continue;
            if (id === this.core.currentPath) {
                this.stats = summary;
                this.#emit("stats", summary);
            }
            // The connection state as well: an ICE restart completes without a connection state change.
            this.#run(this.core.pathUpdate(id, { flowing: summary.flowing, media: PeerPath.mediaState(path.pc.connectionState) }));
        }
    }

    #stop() {
        clearInterval(this.#heartbeatTimer);
        clearInterval(this.#statsTimer);
        clearTimeout(this.#reconnectTimer);
        for (const path of this.paths.values()) path.close();
        this.paths.clear();
        // A stream join() opened itself is ours to close: the camera light goes off with the call.
        if (this.options.ownsStream) this.localStream?.getTracks().forEach((track) => track.stop());
    }
}

/**
 * Joins a session and resolves with the `Call` once the server has welcomed this participant.
 * `address` is the server (`wss://host:port` or `https://host:port`).
 * `localStream` is what to send; without it the call asks for camera and microphone; `null` receives only.
 * @param {string} address
 * @param {{session: string, token?: string, name?: string, localStream?: MediaStream|null,
 *          providers?: string[], device?: object, iceTransportPolicy?: "all"|"relay",
 *          reconnectForMs?: number, maxJoinAttempts?: number, log?: (...args: any[]) => void,
 *          on?: Record<string, (detail: any) => void>}} options
 * @returns {Promise<Call>}
 */
export async function join(address, options) {
    if (!options || typeof options.session !== "string" || !/^[A-Za-z0-9_-]{1,128}$/.test(options.session)) {
        throw new TandemError("bad_message", "session must be 1 to 128 characters of A-Z, a-z, 0-9, _ and -");
    }
    let localStream = options.localStream;
    if (localStream === undefined) {
        try {
            localStream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { height: { ideal: 720 } } });
        } catch (error) {
            throw new TandemError("media_denied", `camera and microphone are not available: ${error.message ?? error}`, { cause: error });
        }
    }
    const call = new Call(address, { ...options, localStream, ownsStream: options.localStream === undefined });
    return call.start();
}

/** A random session id, for apps that start a new session. */
export function randomSessionId() {
    const bytes = new Uint8Array(9);
    crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode(...bytes)).replaceAll("+", "-").replaceAll("/", "_");
}

export default { join, randomSessionId, Call, SessionCore, TandemError, VERSION };
