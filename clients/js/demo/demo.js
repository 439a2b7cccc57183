// The demo page: a two-person call on one session id, with the call's status in view.
import { join, randomSessionId } from "/tandem.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
/** What tests and curious developers can inspect: the call and every event it raised. */
const demo = (window.tandemDemo = { call: null, events: [], error: null });

const STATE_TEXT = {
    connecting: "Connecting", waiting: "Waiting for the other person", connected: "Connected",
    reconnecting: "Reconnecting", closed: "Call ended", failed: "Call failed",
};
const PROVIDER_TEXT = { p2p: "Peer to peer", relay: "Server relay", sfu: "SFU" };

$("session").value = params.get("session") ?? "";
$("name").value = params.get("name") ?? localStorage.getItem("tandem.name") ?? "";
$("random").addEventListener("click", () => { $("session").value = randomSessionId(); });
$("join-form").addEventListener("submit", (event) => { event.preventDefault(); start(); });
if (params.get("autojoin") === "1" && $("session").value) start();

let toastTimer = null;
function toast(text, bad = false) {
    $("toast").textContent = text;
    $("toast").classList.toggle("bad", bad);
    $("toast").hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { $("toast").hidden = true; }, 5000);
}

function log(text) {
    const item = document.createElement("li");
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString([], { hour12: false });
    item.append(time, text);
    $("log").prepend(item);
    while ($("log").children.length > 60) $("log").lastChild.remove();
}

const RECORDED = ["state", "provider", "peer", "quality", "video", "alert", "remotestream", "sfu", "error"];

function record(type, detail) {
    if (type === "remotestream") detail = { provider: detail.provider, epoch: detail.epoch };
    demo.events.push({ type, at: Date.now(), ...(detail && typeof detail === "object" ? detail : { value: detail }) });
}

async function start() {
    const session = $("session").value.trim();
    if (!/^[A-Za-z0-9_-]{1,128}$/.test(session)) {
        showLobbyError("A session id is 1 to 128 letters, digits, _ or -.");
        return;
    }
    const name = $("name").value.trim();
    if (name) localStorage.setItem("tandem.name", name);
    $("join").disabled = true;
    $("lobby-error").hidden = true;

    let localStream;
    try {
        // `?video=360` asks the camera for fewer lines (a data saver for slow links and small machines).
        const height = Number(params.get("video")) || 720;
        localStream = await navigator.mediaDevices.getUserMedia({
            audio: true, video: { width: { ideal: Math.round((height * 16) / 9) }, height: { ideal: height } },
        });
    } catch (error) {
        const denied = error.name === "NotAllowedError" || error.name === "SecurityError";
        showLobbyError(denied
            ? "Camera and microphone access was refused. Allow it in the browser's site settings, then join again."
            : `No camera or microphone could be opened (${error.name}). Check that one is connected and not in use.`);
        return;
    }
    $("local-video").srcObject = localStream;

    const url = new URL(location.href);
    url.searchParams.set("session", session);
    // The shared link names the session only: a token and a name belong to one person.
    for (const key of ["autojoin", "token", "name", "ice"]) url.searchParams.delete(key);
    history.replaceState(null, "", url);
    $("session-label").textContent = session;
    $("session-tag").hidden = false;
    $("lobby").hidden = true;
    $("stage").hidden = false;

    try {
        const call = await join(location.origin, {
            session, name: name || undefined, token: params.get("token") ?? undefined, localStream,
            // `?ice=relay` sends all media through TURN: a quick check that a deployment's TURN works.
            iceTransportPolicy: params.get("ice") === "relay" ? "relay" : undefined,
            log: (...args) => console.warn("[tandem]", ...args),
            // Given to join() so that the log also holds what happened while joining.
            on: Object.fromEntries(RECORDED.map((type) => [type, (detail) => record(type, detail)])),
        });
        demo.call = call;
        wire(call);
        render(call);
        log(`Joined ${session} on ${PROVIDER_TEXT[call.provider.name] ?? call.provider.name}, epoch ${call.provider.epoch}`);
    } catch (error) {
        localStream.getTracks().forEach((t) => t.stop());
        demo.error = { code: error.code, message: error.message };
        $("stage").hidden = true;
        $("session-tag").hidden = true;
        $("lobby").hidden = false;
        showLobbyError(joinErrorText(error));
    }
}

function joinErrorText(error) {
    switch (error.code) {
        case "session_full": return "This session already has two people in it. Pick another session id.";
        case "unauthorized": return "The server wants a valid join token for this session (add ?token=… to the link).";
        case "forbidden": return "This join token is for a different session.";
        case "unreachable": return "The server cannot be reached. Check your connection and try again.";
        default: return `Could not join: ${error.message}`;
    }
}

function showLobbyError(text) {
    $("lobby-error").textContent = text;
    $("lobby-error").hidden = false;
    $("join").disabled = false;
}

function wire(call) {
    for (const type of RECORDED) call.on(type, () => render(call));
    call.on("state", ({ state }) => {
        log(STATE_TEXT[state] ?? state);
        if (state === "failed") toast("The call could not continue. Join again to retry.", true);
    });
    call.on("provider", ({ name, epoch, reason }) => {
        log(`Now on ${PROVIDER_TEXT[name] ?? name}, epoch ${epoch} (${reason})`);
        if (reason !== "join") toast(`Switched to ${PROVIDER_TEXT[name] ?? name} (${reason})`);
    });
    call.on("peer", ({ peer, change, reason }) => {
        const who = peer.name ?? "The other person";
        const text = { joined: `${who} joined`, left: `${who} left${reason && reason !== "left" ? ` (${reason})` : ""}`, reconnecting: `${who} is reconnecting…`, active: `${who} is back` }[change];
        if (text) { log(text); toast(text); }
        if (change === "left") $("remote-video").srcObject = null;
    });
    call.on("remotestream", ({ stream }) => {
        $("remote-video").srcObject = stream;
        $("remote-video").play().catch(() => {});
    });
    call.on("quality", ({ self, level }) => { if (self) log(`Quality ${level}`); });
    call.on("video", ({ maxHeight, reason }) => log(`Sending at most ${maxHeight}p (${reason})`));
    call.on("alert", ({ kind, value }) => log(`Alert: ${kind.replaceAll("_", " ")} (${Math.round(value)})`));
    call.on("sfu", ({ url }) => toast(`The session moved to the SFU (${url ?? "no room url"}): this demo does not bundle an SFU SDK.`, true));
    call.on("error", (error) => log(`Error ${error.code}: ${error.message}`));
    call.on("stats", () => renderStats(call));

    $("leave").onclick = () => {
        call.leave();
        call.localStream?.getTracks().forEach((t) => t.stop());
        $("remote-video").srcObject = null;
        render(call);
    };
    $("fail").onclick = () => { call.reportMediaFailure(); log("Reported a media failure"); };
    $("mute").onclick = () => toggle(call, "audio", $("mute"));
    $("camera").onclick = () => toggle(call, "video", $("camera"));
    $("copy-link").onclick = async () => {
        try { await navigator.clipboard.writeText(location.href); toast("Link copied"); } catch { toast(location.href); }
    };
}

function toggle(call, kind, button) {
    const tracks = call.localStream?.getTracks().filter((t) => t.kind === kind) ?? [];
    const off = button.getAttribute("aria-pressed") !== "true";
    tracks.forEach((t) => { t.enabled = !off; });
    button.setAttribute("aria-pressed", String(off));
}

function render(call) {
    const state = call.state;
    $("state").textContent = STATE_TEXT[state] ?? state;
    $("state-dot").className = `dot ${state}`;
    const provider = call.provider;
    $("provider").textContent = provider ? (PROVIDER_TEXT[provider.name] ?? provider.name) : "–";
    $("epoch").textContent = provider ? String(provider.epoch) : "–";
    const peer = call.peers[0];
    $("peer-name").hidden = !peer;
    $("peer-name").textContent = peer ? (peer.name ?? "Guest") + (peer.state === "reconnecting" ? " · reconnecting" : "") : "";
    const showing = state === "connected" && $("remote-video").srcObject;
    $("placeholder").hidden = Boolean(showing);
    $("placeholder-text").textContent = {
        waiting: "Waiting for the other person to join…", reconnecting: "Reconnecting…", closed: "You left the call.",
        failed: "The call failed. Go back and join again.",
    }[state] ?? "Connecting…";
    const quality = [...demo.events].reverse().find((e) => e.type === "quality" && e.self);
    $("quality").textContent = quality ? quality.level : "–";
    $("quality").className = quality ? `level-${quality.level}` : "";
    const video = [...demo.events].reverse().find((e) => e.type === "video");
    $("video-cap").textContent = `${video ? video.maxHeight : 720}p`;
    const ended = state === "closed" || state === "failed";
    for (const id of ["leave", "fail", "mute", "camera"]) $(id).disabled = ended;
    renderStats(call);
}

function renderStats(call) {
    const s = call.stats;
    const type = { host: "Direct", srflx: "Direct (NAT)", prflx: "Direct (NAT)", relay: "TURN relay" }[s?.candidateType];
    $("candidate").textContent = s?.candidateType ? `${type} · ${s.candidateType}` : "–";
    $("bitrate").textContent = s?.sendKbps !== undefined ? `${Math.round(s.sendKbps)} / ${Math.round(s.receiveKbps ?? 0)}` : "–";
    $("rtt").textContent = s?.rttMs !== undefined ? `${Math.round(s.rttMs)} ms` : "–";
    $("frame").textContent = s?.frameHeight ? `${s.frameHeight}p` : "–";
}
