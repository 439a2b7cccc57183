// Unit tests of the client library's pure parts: `node --test clients/js/test/*.test.js`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
    Backoff, SessionCore, TandemError, healthFields, parseServerMessage, signalURL, summarizeStats, videoEncoding,
} from "../tandem.js";

const ICE = [{ urls: ["stun:127.0.0.1:3478"] }];
const provider = (name, epoch, extra = {}) => ({ name, epoch, room: "s1", polite: false, iceServers: ICE, ...extra });

/** A core with a deterministic backoff, already welcomed when `welcome` is given. */
function core({ welcome, options = {} } = {}) {
    const c = new SessionCore({ session: "s1", name: "Ann", ...options }, { backoff: new Backoff({ jitter: 0 }) });
    c.opened(0);
    if (welcome) c.received({ type: "welcome", seq: 1, session: "s1", participant: "me", resumeKey: "k1", peers: [], heartbeat: { intervalMs: 5000, timeoutMs: 15000 }, ...welcome }, 0);
    return c;
}
const only = (actions, kind) => actions.filter((a) => a.do === kind);
const emitted = (actions, event) => actions.filter((a) => a.do === "emit" && a.event === event).map((a) => a.detail);
const sent = (actions) => only(actions, "send").map((a) => a.message);

describe("Backoff", () => {
    test("doubles from the base up to the cap, and starts over after reset", () => {
        const b = new Backoff({ baseMs: 300, maxMs: 5000, jitter: 0 });
        assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => b.next()), [300, 600, 1200, 2400, 4800, 5000]);
        b.reset();
        assert.equal(b.next(), 300);
    });
    test("jitter stays within its share and never passes the cap", () => {
        const low = new Backoff({ baseMs: 1000, maxMs: 1000, jitter: 0.3, random: () => 0 });
        const high = new Backoff({ baseMs: 1000, maxMs: 1000, jitter: 0.3, random: () => 0.999999 });
        assert.equal(low.next(), 700);
        assert.equal(high.next(), 1000);
    });
});

describe("signalURL", () => {
    const table = [
        ["wss://example.com", "wss://example.com/v1/signal"],
        ["https://example.com:8443", "wss://example.com:8443/v1/signal"],
        ["http://127.0.0.1:8080/", "ws://127.0.0.1:8080/v1/signal"],
        ["wss://example.com/custom/path", "wss://example.com/custom/path"],
    ];
    for (const [input, expected] of table) test(input, () => assert.equal(signalURL(input), expected));
    test("refuses other schemes", () => assert.throws(() => signalURL("ftp://example.com"), { code: "bad_url" }));
});

describe("parseServerMessage", () => {
    test("a message with a type", () => assert.deepEqual(parseServerMessage('{"type":"pong","t":1,"seq":3}'), { type: "pong", t: 1, seq: 3 }));
    for (const bad of ["not json", "[1,2]", '{"t":1}', '{"type":5}', "null"]) {
        test(`refuses ${bad}`, () => {
            const result = parseServerMessage(bad);
            assert.ok(result instanceof TandemError);
            assert.equal(result.code, "bad_message");
        });
    }
    test("refuses binary frames", () => assert.equal(parseServerMessage(new ArrayBuffer(4)).code, "bad_message"));
});

describe("videoEncoding", () => {
    test("scales a 720-line source to each rung", () => {
        assert.deepEqual(videoEncoding(720, 720), { maxBitrate: 1_500_000, scaleResolutionDownBy: 1 });
        assert.deepEqual(videoEncoding(360, 720), { maxBitrate: 450_000, scaleResolutionDownBy: 2 });
        assert.deepEqual(videoEncoding(240, 480), { maxBitrate: 200_000, scaleResolutionDownBy: 2 });
    });
    test("never scales up a small source", () => assert.equal(videoEncoding(480, 360).scaleResolutionDownBy, 1));
    test("an unknown rung is treated as the lowest", () => assert.equal(videoEncoding(1080, 720).maxBitrate, 200_000));
});

describe("summarizeStats", () => {
    const stats = ({ received, lost, sent, frames, relay = false, available }) => new Map(Object.entries({
        T: { id: "T", type: "transport", selectedCandidatePairId: "P" },
        P: { id: "P", type: "candidate-pair", localCandidateId: "L", remoteCandidateId: "R", currentRoundTripTime: 0.0423, availableOutgoingBitrate: available },
        L: { id: "L", type: "local-candidate", candidateType: relay ? "relay" : "srflx" },
        R: { id: "R", type: "remote-candidate", candidateType: "host" },
        V: { id: "V", type: "inbound-rtp", kind: "video", packetsReceived: received, packetsLost: lost, bytesReceived: received * 1000, jitter: 0.012, framesDecoded: frames, frameHeight: 360 },
        A: { id: "A", type: "inbound-rtp", kind: "audio", packetsReceived: received, packetsLost: 0, bytesReceived: received * 100, jitter: 0.004 },
        O: { id: "O", type: "outbound-rtp", kind: "video", bytesSent: sent },
    }));

    test("the first sample has no rates and is not flowing yet", () => {
        const s = summarizeStats(stats({ received: 100, lost: 0, sent: 0, frames: 10 }), null, 1000);
        assert.equal(s.rttMs, 42.3);
        assert.equal(s.candidateType, "srflx");
        assert.equal(s.jitterMs, 12);
        assert.equal(s.frameHeight, 360);
        assert.equal(s.framesDecoded, 10);
        assert.equal(s.flowing, false);
        assert.equal(s.lossPct, undefined);
        assert.equal(s.bitrateKbps, undefined, "no bitrate before anything was measured");
    });
    test("rates and loss come from the difference with the previous sample", () => {
        const first = summarizeStats(stats({ received: 100, lost: 0, sent: 0, frames: 10 }), null, 1000);
        const second = summarizeStats(stats({ received: 280, lost: 20, sent: 125_000, frames: 40 }), first, 2000);
        assert.equal(second.lossPct, 5.3);  // 20 lost of 380 expected (180 video + 180 audio received)
        assert.equal(second.sendKbps, 1000);
        assert.equal(second.bitrateKbps, 1000);
        assert.equal(second.flowing, true);
    });
    test("the sender's estimate wins over what it happened to send", () => {
        const first = summarizeStats(stats({ received: 1, lost: 0, sent: 0, frames: 0 }), null, 0);
        const second = summarizeStats(stats({ received: 2, lost: 0, sent: 1000, frames: 0, available: 2_500_000 }), first, 1000);
        assert.equal(second.bitrateKbps, 2500);
    });
    test("a path with a relay candidate at either end is relayed", () => {
        assert.equal(summarizeStats(stats({ received: 1, lost: 0, sent: 0, frames: 0, relay: true })).candidateType, "relay");
    });
    test("health fields are only the protocol's", () => {
        const fields = healthFields(summarizeStats(stats({ received: 1, lost: 0, sent: 0, frames: 0 })));
        assert.deepEqual(Object.keys(fields).sort(), ["candidateType", "frameHeight", "jitterMs", "rttMs"]);
    });
});

describe("SessionCore: joining", () => {
    test("the socket opens: join with the session, name and offered providers", () => {
        const c = new SessionCore({ session: "s1", name: "Ann", token: "t", providers: ["p2p", "relay"] });
        assert.deepEqual(sent(c.opened(0)), [{ type: "join", session: "s1", token: "t", name: "Ann", providers: ["p2p", "relay"] }]);
        assert.equal(c.state, "connecting");
    });

    test("welcomed alone on p2p: the call waits, no path yet, a health report", () => {
        const c = core();
        const actions = c.received({ type: "welcome", seq: 1, participant: "me", resumeKey: "k", peers: [], provider: provider("p2p", 1) }, 10);
        assert.equal(only(actions, "welcome").length, 1);
        assert.deepEqual(emitted(actions, "provider"), [{ name: "p2p", epoch: 1, previous: null, reason: "join", polite: false }]);
        assert.equal(only(actions, "open").length, 0);
        assert.deepEqual(only(actions, "report").map((a) => a.message), [{ type: "health", epoch: 1, provider: "p2p", media: "new" }]);
        assert.deepEqual(emitted(actions, "state"), [{ state: "waiting" }]);
    });

    test("welcomed with a peer present: a path to it opens at once, polite as the server says", () => {
        const c = core();
        const actions = c.received({ type: "welcome", seq: 1, participant: "me", resumeKey: "k", peers: [{ id: "bob", name: "Bob" }], provider: provider("p2p", 1, { polite: true }) }, 10);
        const [open] = only(actions, "open");
        assert.equal(open.path.remote, "bob");
        assert.equal(open.path.polite, true);
        assert.equal(open.path.epoch, 1);
        assert.deepEqual(open.path.iceServers, ICE);
        assert.deepEqual(emitted(actions, "peer"), [{ peer: { id: "bob", name: "Bob" }, change: "joined" }]);
    });

    const refusals = [["session_full"], ["unauthorized"], ["forbidden"], ["provider_unavailable"]];
    for (const [code] of refusals) {
        test(`a join refused with ${code} fails the call`, () => {
            const c = core();
            const actions = c.received({ type: "error", seq: 0, code, message: "no", ref: "join" }, 10);
            assert.equal(only(actions, "fail")[0].error.code, code);
            assert.equal(only(actions, "closeSocket").length, 1);
            assert.equal(c.state, "failed");
        });
    }
});

describe("SessionCore: peers and signals", () => {
    const joined = () => core({ welcome: { provider: provider("p2p", 1) } });

    test("a peer joins: a path opens to it", () => {
        const c = joined();
        const actions = c.received({ type: "peer-joined", seq: 2, peer: { id: "bob", name: "Bob" } }, 10);
        assert.deepEqual(only(actions, "open").map((a) => [a.path.remote, a.path.polite]), [["bob", false]]);
        assert.equal(c.state, "connecting");
    });

    test("signals go to the path of their epoch; stale ones are dropped, future ones wait for their provider", () => {
        const c = joined();
        c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 10);
        const path = c.currentPath;
        const offer = { kind: "offer", epoch: 1, sdp: "v=0" };
        assert.deepEqual(only(c.received({ type: "signal", seq: 3, from: "bob", data: offer }, 11), "signal"), [{ do: "signal", path, data: offer }]);
        assert.deepEqual(c.received({ type: "signal", seq: 4, from: "bob", data: { kind: "offer", epoch: 0, sdp: "old" } }, 12), []);
        const early = { kind: "candidate", epoch: 2, candidate: { candidate: "c" } };
        assert.equal(only(c.received({ type: "signal", seq: 5, from: "bob", data: early }, 13), "signal").length, 0);
        const switched = c.received({ type: "provider", seq: 6, ...provider("p2p", 2), reason: "admin", previous: "p2p" }, 14);
        assert.deepEqual(only(switched, "signal").map((a) => a.data), [early]);
    });

    test("signals from someone who is not our remote are dropped", () => {
        const c = joined();
        c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 10);
        assert.deepEqual(only(c.received({ type: "signal", seq: 3, from: "server", data: { kind: "offer", epoch: 1, sdp: "x" } }, 11), "signal"), []);
        assert.deepEqual(c.received({ type: "signal", seq: 4, from: "bob", data: { kind: "offer" } }, 11), [], "no epoch");
    });

    test("a path's outgoing signal is stamped with the epoch and addressed to its remote", () => {
        const c = joined();
        c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 10);
        assert.deepEqual(sent(c.pathSignal(c.currentPath, { kind: "candidate", candidate: { candidate: "x" } })),
            [{ type: "signal", to: "bob", data: { kind: "candidate", candidate: { candidate: "x" }, epoch: 1 } }]);
        assert.deepEqual(c.pathSignal(999, { kind: "offer" }), []);
    });

    test("a peer leaves: its path closes and the call waits again", () => {
        const c = joined();
        c.received({ type: "peer-joined", seq: 2, peer: { id: "bob", name: "Bob" } }, 10);
        const path = c.currentPath;
        const actions = c.received({ type: "peer-left", seq: 3, peer: "bob", reason: "timeout" }, 11);
        assert.deepEqual(only(actions, "closePath"), [{ do: "closePath", path }]);
        assert.deepEqual(emitted(actions, "peer"), [{ peer: { id: "bob", name: "Bob" }, change: "left", reason: "timeout" }]);
        assert.equal(c.state, "waiting");
    });

    test("peer-state changes are passed on", () => {
        const c = joined();
        c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 10);
        assert.deepEqual(emitted(c.received({ type: "peer-state", seq: 3, peer: "bob", state: "reconnecting" }, 11), "peer"),
            [{ peer: { id: "bob", name: null }, change: "reconnecting" }]);
        assert.deepEqual(c.received({ type: "peer-state", seq: 4, peer: "nobody", state: "active" }, 11), []);
    });

    test("a repeated seq (a replay after resume) is handled once", () => {
        const c = joined();
        assert.equal(only(c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 10), "open").length, 1);
        assert.deepEqual(c.received({ type: "peer-joined", seq: 2, peer: { id: "bob" } }, 11), []);
    });
});

describe("SessionCore: provider switches", () => {
    function connected() {
        const c = core({ welcome: { provider: provider("p2p", 1), peers: [{ id: "bob" }] } });
        const path = c.currentPath;
        c.pathUpdate(path, { media: "connected", flowing: true });
        return { c, path };
    }

    test("the same provider at the next epoch restarts ICE on the same path", () => {
        const { c, path } = connected();
        const actions = c.received({ type: "provider", seq: 2, ...provider("p2p", 2), reason: "failure", previous: "p2p" }, 10);
        assert.deepEqual(only(actions, "restart").map((a) => [a.path, a.epoch]), [[path, 2]]);
        assert.equal(only(actions, "open").length, 0);
        assert.equal(only(actions, "closePath").length, 0);
        assert.deepEqual(emitted(actions, "provider"), [{ name: "p2p", epoch: 2, previous: "p2p", reason: "failure", polite: false }]);
        assert.equal(only(actions, "report")[0].message.epoch, 2);
    });

    test("the relay at the next epoch gets a new path: the server's legs belong to one epoch", () => {
        const c = core({ welcome: { provider: provider("relay", 1), peers: [{ id: "bob" }] } });
        const old = c.currentPath;
        c.pathUpdate(old, { media: "connected", flowing: true });
        const actions = c.received({ type: "provider", seq: 2, ...provider("relay", 2), reason: "admin", previous: "relay" }, 10);
        assert.equal(only(actions, "restart").length, 0);
        const [open] = only(actions, "open");
        assert.equal(open.path.remote, "server");
        assert.equal(open.path.epoch, 2);
        assert.notEqual(open.path.id, old);
    });

    test("another provider: make before break, the old path closes once the new one carries media", () => {
        const { c, path: old } = connected();
        const actions = c.received({ type: "provider", seq: 2, ...provider("relay", 2), reason: "failure", previous: "p2p" }, 10);
        const [open] = only(actions, "open");
        assert.equal(open.path.remote, "server");
        assert.equal(open.path.polite, true, "towards the server the client is always polite");
        assert.equal(only(actions, "closePath").length, 0, "the old path keeps the call going meanwhile");
        assert.equal(c.state, "connected");
        assert.deepEqual(c.pathTrack(open.path.id), [], "not shown while the old path still flows");
        const flowing = c.pathUpdate(open.path.id, { media: "connected", flowing: true });
        assert.deepEqual(only(flowing, "show"), [{ do: "show", path: open.path.id }]);
        assert.deepEqual(only(flowing, "closePath"), [{ do: "closePath", path: old }]);
    });

    test("an older or repeated epoch changes nothing", () => {
        const { c } = connected();
        assert.deepEqual(c.received({ type: "provider", seq: 2, ...provider("relay", 1), reason: "failure" }, 10), []);
        assert.equal(c.provider.name, "p2p");
    });

    test("the sfu provider hands the room to the app and closes our paths", () => {
        const { c, path } = connected();
        const sfu = { provider: "daily", url: "https://x.daily.co/s1", token: "tok" };
        const actions = c.received({ type: "provider", seq: 2, ...provider("sfu", 2, { sfu }), reason: "quality", previous: "p2p" }, 10);
        assert.deepEqual(emitted(actions, "sfu"), [{ room: "s1", epoch: 2, ...sfu }]);
        assert.deepEqual(only(actions, "closePath"), [{ do: "closePath", path }]);
        assert.equal(c.state, "connecting");
        c.sfuUpdate("connected");
        assert.equal(c.state, "connected");
    });

    test("a media failure is reported for the current epoch", () => {
        const { c } = connected();
        assert.deepEqual(sent(c.reportFailure()), [{ type: "health", epoch: 1, provider: "p2p", media: "failed" }]);
    });

    test("media state changes of the current path are reported; of an old one, not", () => {
        const { c, path } = connected();
        const failed = c.pathUpdate(path, { media: "failed" });
        assert.equal(only(failed, "report")[0].message.media, "failed");
        assert.deepEqual(c.pathUpdate(path, { media: "failed" }), [], "no change, no report");
    });

    test("a video recommendation is applied and passed on; an unknown height is ignored", () => {
        const { c } = connected();
        const actions = c.received({ type: "video", seq: 2, maxHeight: 360, reason: "bandwidth" }, 10);
        assert.deepEqual(only(actions, "video"), [{ do: "video", maxHeight: 360 }]);
        assert.deepEqual(emitted(actions, "video"), [{ maxHeight: 360, reason: "bandwidth" }]);
        assert.deepEqual(c.received({ type: "video", seq: 3, maxHeight: 1000 }, 10), []);
    });
});

describe("SessionCore: the signaling socket", () => {
    const joined = () => core({ welcome: { provider: provider("p2p", 1), peers: [{ id: "bob" }] } });

    test("a dropped socket reconnects with backoff and resumes with the last seq", () => {
        const c = joined();
        c.pathUpdate(c.currentPath, { media: "connected", flowing: true });
        c.received({ type: "pong", seq: 7, t: 1 }, 10);
        const first = c.closed(1006, "", 20);
        assert.deepEqual(only(first, "reconnect").map((a) => a.delayMs), [300]);
        assert.equal(c.state, "reconnecting");
        assert.equal(only(c.closed(1006, "", 400), "reconnect")[0].delayMs, 600);
        const [join] = sent(c.opened(1000));
        assert.deepEqual(join.resume, { participant: "me", key: "k1", lastSeq: 7 });
        c.received({ type: "welcome", seq: 8, resumed: true, participant: "me", resumeKey: "k1", peers: [{ id: "bob" }], provider: provider("p2p", 1) }, 1100);
        assert.equal(c.state, "connected", "media never depended on the socket");
        assert.equal(only(c.closed(1006, "", 2000), "reconnect")[0].delayMs, 300, "backoff starts over after a welcome");
    });

    test("a draining server is resumed at once", () => {
        assert.equal(only(joined().closed(4000, "draining", 10), "reconnect")[0].delayMs, 0);
    });

    for (const [code, error] of [[4401, "unauthorized"], [4403, "forbidden"], [4409, "replaced"]]) {
        test(`close ${code} ends the call (${error})`, () => {
            const c = joined();
            const actions = c.closed(code, "", 10);
            assert.equal(only(actions, "fail")[0].error.code, error);
            assert.equal(only(actions, "reconnect").length, 0);
            assert.equal(only(actions, "closePath").length, 1);
            assert.equal(c.state, "failed");
        });
    }

    test("a refused resume joins afresh as a new participant and starts media over", () => {
        const c = joined();
        const oldPath = c.currentPath;
        c.closed(1006, "", 10);
        c.opened(20);
        const refused = c.received({ type: "error", seq: 0, code: "resume_failed", message: "unknown participant", ref: "join" }, 30);
        const [join] = sent(refused);
        assert.equal(join.resume, undefined);
        assert.equal(emitted(refused, "error")[0].code, "resume_failed");
        const welcome = c.received({ type: "welcome", seq: 1, participant: "me2", resumeKey: "k2", peers: [{ id: "bob" }], provider: provider("p2p", 1, { polite: true }) }, 40);
        assert.deepEqual(only(welcome, "closePath"), [{ do: "closePath", path: oldPath }]);
        assert.equal(only(welcome, "open")[0].path.polite, true);
        assert.equal(c.participant, "me2");
        assert.equal(c.lastSeq, 1);
    });

    test("a server that never answers fails the join after the attempts allowed", () => {
        const c = new SessionCore({ session: "s1", maxJoinAttempts: 3 }, { backoff: new Backoff({ jitter: 0 }) });
        for (let i = 0; i < 2; i++) {
            c.opened(i);
            assert.equal(only(c.closed(1006, "", i), "reconnect").length, 1);
        }
        c.opened(3);
        assert.equal(only(c.closed(1006, "", 3), "fail")[0].error.code, "unreachable");
    });

    test("each heartbeat pings and reports; a silent socket is closed to reconnect", () => {
        const c = joined();
        const beat = c.tick(5000);
        assert.deepEqual(sent(beat).map((m) => m.type), ["ping"]);
        assert.equal(only(beat, "report").length, 1);
        const dead = c.tick(10_001);
        assert.deepEqual(dead, [{ do: "closeSocket", code: 1000, reason: "heartbeat lost", reconnect: true }]);
    });

    test("leave tells the server and closes everything", () => {
        const c = joined();
        const actions = c.leave();
        assert.deepEqual(sent(actions), [{ type: "leave" }]);
        assert.equal(only(actions, "closePath").length, 1);
        assert.equal(only(actions, "closeSocket").length, 1);
        assert.equal(c.state, "closed");
        assert.deepEqual(c.closed(1000, "", 10), [], "the close that follows is expected");
        assert.deepEqual(c.received({ type: "peer-joined", seq: 9, peer: { id: "x" } }, 10), []);
    });
});

describe("SessionCore: what the review found", () => {
    const joined = () => core({ welcome: { provider: provider("p2p", 1), peers: [{ id: "bob" }] } });

    test("a server that never accepts the socket fails the join too", () => {
        const c = new SessionCore({ session: "s1", maxJoinAttempts: 3 }, { backoff: new Backoff({ jitter: 0 }) });
        assert.equal(only(c.closed(1006, "", 0), "reconnect").length, 1);
        assert.equal(only(c.closed(1006, "", 1), "reconnect").length, 1);
        assert.equal(only(c.closed(1006, "", 2), "fail")[0].error.code, "unreachable");
    });

    test("signals made while the socket is down are sent after the resume, if still for this epoch", () => {
        const c = joined();
        const path = c.currentPath;
        c.closed(1006, "", 10);
        assert.deepEqual(c.pathSignal(path, { kind: "answer", sdp: "a" }), []);
        c.opened(20);
        const welcome = c.received({ type: "welcome", seq: 2, resumed: true, participant: "me", resumeKey: "k1", peers: [{ id: "bob" }], provider: provider("p2p", 1) }, 30);
        assert.deepEqual(sent(welcome), [{ type: "signal", to: "bob", data: { kind: "answer", sdp: "a", epoch: 1 } }]);
    });

    test("a join answered by a passing error is retried on a new socket; a silent server too", () => {
        const c = core();
        const retried = c.received({ type: "error", seq: 0, code: "internal", message: "store unavailable", ref: "join" }, 10);
        assert.equal(only(retried, "closeSocket")[0].reconnect, true);
        assert.equal(only(retried, "fail").length, 0);
        const silent = new SessionCore({ session: "s1" });
        silent.opened(0);
        assert.deepEqual(silent.tick(9000), []);
        assert.equal(silent.tick(10_001)[0].reconnect, true);
    });

    test("a new participant's welcome is taken whatever seq the old one had reached", () => {
        const c = joined();
        c.received({ type: "pong", seq: 9, t: 1 }, 10);
        c.closed(1006, "", 20);
        c.opened(30);
        const welcome = c.received({ type: "welcome", seq: 1, participant: "me2", resumeKey: "k2", peers: [{ id: "bob" }], provider: provider("p2p", 1) }, 40);
        assert.equal(only(welcome, "welcome").length, 1);
        assert.equal(c.participant, "me2");
        assert.equal(c.lastSeq, 1);
    });

    test("media that stops arriving stops counting as connected", () => {
        const c = joined();
        c.pathUpdate(c.currentPath, { media: "connecting", flowing: true });
        assert.equal(c.state, "connected");
        c.pathUpdate(c.currentPath, { flowing: false });
        assert.equal(c.state, "connecting");
        assert.equal(only(c.pathUpdate(c.currentPath, { flowing: true }), "show").length, 1, "shown again when it comes back");
    });

    test("an SFU epoch starts unconnected even if an earlier one was", () => {
        const c = joined();
        c.received({ type: "provider", seq: 2, ...provider("sfu", 2), reason: "quality" }, 10);
        c.sfuUpdate("connected");
        c.received({ type: "provider", seq: 3, ...provider("p2p", 3), reason: "admin" }, 20);
        const back = c.received({ type: "provider", seq: 4, ...provider("sfu", 4), reason: "admin" }, 30);
        assert.equal(only(back, "report")[0].message.media, "connecting");
        assert.equal(c.state, "connecting");
    });

    test("alone on the relay is waiting, not connected", () => {
        const c = core({ welcome: { provider: provider("relay", 1) } });
        const [open] = [...c.paths.values()];
        c.pathUpdate(open.id, { media: "connected", flowing: true });
        assert.equal(c.state, "waiting");
    });

    test("an old error replayed by a resume is passed on, not taken as the answer to the join", () => {
        const c = joined();
        c.closed(1006, "", 10);
        c.opened(20);
        const replayed = c.received({ type: "error", seq: 2, code: "stale_epoch", message: "old", ref: "signal" }, 30);
        assert.deepEqual(replayed.map((a) => a.do), ["emit"]);
        assert.equal(c.phase, "joining");
    });

    test("after a refused resume the call still reads as reconnecting and keeps trying", () => {
        const c = joined();
        c.closed(1006, "", 10);
        c.opened(20);
        c.received({ type: "error", seq: 0, code: "resume_failed", message: "gone", ref: "join" }, 30);
        assert.equal(c.state, "reconnecting");
        for (let i = 0; i < 8; i++) assert.equal(only(c.closed(1006, "", 40 + i), "fail").length, 0);
    });
});
