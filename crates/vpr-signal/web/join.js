// Join page logic: reads the join token from the URL, shows the view of its
// role (resident, officer, observer), joins the room over the WebSocket join
// (`/ws`, protocol in crates/vpr-signal/src/ws.rs) with one peer connection,
// and creates an SDP answer to every renegotiation offer of the server.
// When the connection drops, it restarts ICE on the same peer connection
// (resuming the session on a new WebSocket if the old one is gone) and
// joins again from scratch only if that fails.
//
// The token is never logged. Its claims are decoded here without checking
// the signature: the server checks it when the WebSocket opens.
"use strict";

(() => {
  const PROTOCOL_VERSION = 1;
  /** Maximum time a renegotiation may take before the page rejoins instead. */
  const RENEGOTIATION_TIMEOUT_MS = 5000;
  /** Maximum wait for ICE gathering before the first offer is sent anyway. */
  const GATHERING_TIMEOUT_MS = 3000;
  /** Delays before each reconnect attempt, in order. Later attempts reuse the last. */
  const RECONNECT_DELAYS_MS = [1000, 2000, 4000, 8000];
  /** Attempts after which a lost call is given up (about 80 s of delays). */
  const MAX_RECONNECT_ATTEMPTS = 12;
  /** Attempts after which a call that never joined shows an error. */
  const MAX_FIRST_JOIN_ATTEMPTS = 3;
  /** Maximum time an ICE restart may take before the page rejoins from scratch. */
  const RECOVERY_TIMEOUT_MS = 15000;
  /** Interval of the inbound-media check and of liveness pings while recovering. */
  const MONITOR_INTERVAL_MS = 1000;
  /**
   * Time without received bytes after which a live call counts as stalled.
   * Chromium can take longer than this to report ICE `disconnected`.
   */
  const STALL_MS = 2500;
  /** Time without a `pong` after which the WebSocket counts as dead. */
  const PONG_TIMEOUT_MS = 3000;
  /** Maximum number of warnings kept for `vprJoinStats()`. */
  const MAX_WARNINGS = 20;
  /** JPEG quality of saved snapshots. */
  const SNAPSHOT_QUALITY = 0.9;
  /** Hex digits of the SHA-256 shown after a snapshot is saved. */
  const SHORT_HASH_DIGITS = 12;
  /** Maximum number of state changes kept for `vprJoinStats()`. */
  const MAX_STATE_HISTORY = 50;
  const LANGUAGE_KEY = "vpr.language";
  /**
   * Simulcast encodings of the resident's camera, lowest first: a quarter,
   * half and full resolution, named by the RIDs the server ranks by.
   */
  const RESIDENT_ENCODINGS = [
    { rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150000 },
    { rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500000 },
    { rid: "f", scaleResolutionDownBy: 1, maxBitrate: 2500000 },
  ];

  const STRINGS = window.VPR_STRINGS;
  const $ = (id) => document.getElementById(id);

  /** Logs a warning and keeps it for `vprJoinStats()`. Never pass the token. */
  function warn(...parts) {
    console.warn(...parts);
    const text = parts.map((part) => (part instanceof Error ? `${part.name}: ${part.message}` : String(part))).join(" ");
    call.warnings.push(text);
    if (call.warnings.length > MAX_WARNINGS) call.warnings.shift();
  }

  const token = new URLSearchParams(location.search).get("token") || "";
  const claims = decodeClaims(token);
  const role = viewOf(claims && claims.role);

  const call = {
    language: initialLanguage(),
    state: "idle",
    ws: null,
    pc: null,
    audioTrack: null,
    videoTrack: null,
    videoSender: null,
    facing: "user",
    canSwitchCamera: false,
    micMuted: false,
    remoteMuted: false,
    soundBlocked: false,
    joinedOnce: false,
    offersAnswered: 0,
    /** Peer connections opened so far, reconnects included. */
    connections: 0,
    /** States in the order they were entered, for tests and support. */
    stateHistory: [],
    savingSnapshot: false,
    /** Result of the last snapshot: `{ ok, snapshotId, sha256, sizeBytes, detail }`. */
    lastSnapshot: null,
    ended: false,
    ending: null,
    problem: null,
    reconnectAttempts: 0,
    reconnectTimer: null,
    /**
     * Recovery in progress, or null: why it started, when it gives up, when
     * the last ping or resume went out, when the socket answered, whether a
     * resume is pending and whether the restart offer went out.
     */
    recovery: null,
    /** An ICE restart offer is wanted once the signalling state is stable. */
    restartWanted: false,
    /** ICE restart offers sent so far. */
    iceRestarts: 0,
    /** Received bytes and when they last grew, for the stall check. */
    bytesReceived: 0,
    bytesGrewAt: 0,
    monitorTimer: null,
    /** Participant id of this page's participant, from `joined`. */
    participantId: null,
    /** Participant id of the resident, from `room`. */
    residentId: null,
    /** Participant id of the loudest participant, from `active_speaker`. */
    activeSpeaker: null,
    /** Recent warnings, for tests and support. */
    warnings: [],
    wakeLock: null,
    /** Remote tracks by receiver track id: `{ element, transceiver, participantId }`. */
    remote: new Map(),
  };

  // ---- Token and language -------------------------------------------------

  /** Decodes the JWT payload (base64url JSON), or returns null. */
  function decodeClaims(jwt) {
    const parts = jwt.split(".");
    if (parts.length !== 3) return null;
    try {
      const base64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
      const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
      const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const payload = JSON.parse(new TextDecoder().decode(bytes));
      return payload && typeof payload === "object" ? payload : null;
    } catch {
      return null;
    }
  }

  /** Maps a token role to its view. Dispatchers get the observer view. */
  function viewOf(tokenRole) {
    if (tokenRole === "resident" || tokenRole === "officer") return tokenRole;
    return "observer";
  }

  function initialLanguage() {
    try {
      const saved = localStorage.getItem(LANGUAGE_KEY);
      if (saved === "en" || saved === "fr") return saved;
    } catch {
      // Storage can be disabled, and then the browser language decides.
    }
    return (navigator.language || "en").toLowerCase().startsWith("fr") ? "fr" : "en";
  }

  /** Returns the text of `key` in the current language with `{name}` filled in. */
  function t(key, values = {}) {
    const text = STRINGS[call.language][key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\w+)\}/g, (_, name) => String(values[name] ?? ""));
  }

  function applyLanguage() {
    document.documentElement.lang = call.language === "fr" ? "fr-CA" : "en-CA";
    document.title = t("brand");
    for (const element of document.querySelectorAll("[data-i18n]")) {
      element.textContent = t(element.dataset.i18n);
    }
    for (const element of document.querySelectorAll("[data-i18n-label]")) {
      element.setAttribute("aria-label", t(element.dataset.i18nLabel));
    }
    const other = call.language === "fr" ? "en" : "fr";
    const button = $("language");
    button.textContent = STRINGS[other].languageName;
    button.lang = other === "fr" ? "fr-CA" : "en-CA";
    button.setAttribute("aria-label", t("switchLanguage"));
    $("recording").textContent = t(claims && claims.recording === true ? "recorded" : "notRecorded");
    renderAll();
  }

  function toggleLanguage() {
    call.language = call.language === "fr" ? "en" : "fr";
    try {
      localStorage.setItem(LANGUAGE_KEY, call.language);
    } catch {
      // Not saved, but the choice still holds for this page.
    }
    applyLanguage();
  }

  // ---- Rendering ----------------------------------------------------------

  const VIEWS = ["loading", "consent", "call", "ended", "problem"];

  function showView(name) {
    for (const view of VIEWS) $(view).hidden = view !== name;
  }

  function setState(state) {
    if (call.state !== state) {
      call.stateHistory.push(state);
      if (call.stateHistory.length > MAX_STATE_HISTORY) call.stateHistory.shift();
    }
    call.state = state;
    renderState();
  }

  function renderAll() {
    renderState();
    renderControls();
    renderWaiting();
    renderSpeaker();
    renderEnded();
    renderProblem();
  }

  function renderState() {
    const keys = {
      connecting: "stateConnecting",
      live: "stateLive",
      reconnecting: "stateReconnecting",
      ended: "stateEnded",
    };
    const element = $("state");
    element.dataset.state = call.state;
    element.textContent = keys[call.state] ? t(keys[call.state]) : "";
  }

  function setButton(button, text, label) {
    button.textContent = text;
    button.setAttribute("aria-label", label || text);
  }

  function renderControls() {
    const mic = $("mute-mic");
    mic.hidden = !call.audioTrack;
    mic.setAttribute("aria-pressed", String(call.micMuted));
    setButton(mic, t(call.micMuted ? "unmuteMic" : "muteMic"));

    const camera = $("switch-camera");
    camera.hidden = role !== "resident" || !call.videoTrack || !call.canSwitchCamera;
    setButton(camera, t(call.facing === "user" ? "switchToBack" : "switchToFront"));

    const remote = $("mute-remote");
    remote.hidden = role === "resident";
    remote.setAttribute("aria-pressed", String(call.remoteMuted));
    if (role === "officer") {
      setButton(
        remote,
        t(call.remoteMuted ? "unmuteResident" : "muteResident"),
        t(call.remoteMuted ? "unmuteResidentLabel" : "muteResidentLabel"),
      );
    } else {
      setButton(remote, t(call.remoteMuted ? "unmuteCall" : "muteCall"));
    }

    const snapshot = $("save-snapshot");
    snapshot.hidden = role !== "officer";
    snapshot.disabled = call.savingSnapshot;
    setButton(snapshot, t("saveSnapshot"), t("saveSnapshotLabel"));

    $("enable-sound").hidden = !call.soundBlocked;
    setButton($("leave"), t(role === "resident" ? "leaveCall" : "endCall"));

    const local = $("local");
    local.hidden = !call.videoTrack;
    local.classList.toggle("mirrored", call.facing === "user");
  }

  function renderWaiting() {
    const waiting = $("waiting");
    const hasVideo = [...call.remote.values()].some((entry) => entry.element.tagName === "VIDEO");
    waiting.hidden = hasVideo;
    const keys = { resident: "waitingOfficer", officer: "waitingResident", observer: "waitingVideo" };
    waiting.textContent = t(keys[role]);
  }

  /** Marks the active speaker's video and names them in the speaker line. */
  function renderSpeaker() {
    const speaker = call.activeSpeaker;
    for (const { element, participantId } of call.remote.values()) {
      if (element.tagName === "VIDEO") element.classList.toggle("speaking", speaker !== null && participantId === speaker);
    }
    const line = $("speaker");
    let key = null;
    if (speaker && speaker === call.participantId) key = "speakerYou";
    else if (speaker && speaker === call.residentId) key = "speakerResident";
    else if (speaker) key = "speakerOther";
    line.hidden = key === null;
    line.dataset.participant = speaker || "";
    line.textContent = key ? t(key) : "";
  }

  function renderEnded() {
    if (!call.ending) return;
    const { key, reason } = call.ending;
    $("ended-reason").textContent = t(key, { reason });
  }

  function renderProblem() {
    if (!call.problem) return;
    const { key, detail, retry } = call.problem;
    $("problem-detail").textContent = t(key, { detail });
    $("retry").hidden = !retry;
  }

  function showProblem(key, detail, retry) {
    call.problem = { key, detail, retry };
    setState("idle");
    showView("problem");
    renderProblem();
  }

  // ---- Local media --------------------------------------------------------

  async function acquireMedia() {
    if (role === "observer") return;
    const audio = { echoCancellation: true, noiseSuppression: true, autoGainControl: true };
    // A resident shows the scene, so the back camera comes first.
    const video =
      role === "resident"
        ? { facingMode: { ideal: "environment" }, width: { ideal: 1280 }, height: { ideal: 720 } }
        : { width: { ideal: 1280 }, height: { ideal: 720 } };

    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    } catch (error) {
      // An officer without a camera or microphone still joins to watch.
      if (role === "resident") throw error;
      stream = await navigator.mediaDevices.getUserMedia({ audio }).catch(() => new MediaStream());
    }
    call.audioTrack = stream.getAudioTracks()[0] || null;
    setVideoTrack(stream.getVideoTracks()[0] || null);
    if (call.audioTrack) call.audioTrack.enabled = !call.micMuted;

    if (role === "resident" && call.videoTrack) {
      const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
      const settings = call.videoTrack.getSettings();
      call.canSwitchCamera = cameras.length > 1 || typeof settings.facingMode === "string";
    }
  }

  function setVideoTrack(track) {
    call.videoTrack = track;
    const facing = track && track.getSettings().facingMode;
    // Desktop cameras report no facing mode and face the user.
    call.facing = facing === "environment" ? "environment" : "user";
    $("local").srcObject = track ? new MediaStream([track]) : null;
  }

  function stopLocalMedia() {
    for (const track of [call.audioTrack, call.videoTrack]) if (track) track.stop();
    $("local").srcObject = null;
  }

  async function switchCamera() {
    const next = call.facing === "user" ? "environment" : "user";
    const previous = call.facing;
    // Many phones cannot open both cameras at once, so the old one stops first.
    if (call.videoTrack) call.videoTrack.stop();
    const open = (facingMode) =>
      navigator.mediaDevices.getUserMedia({ video: { facingMode, width: { ideal: 1280 }, height: { ideal: 720 } } });
    let stream = null;
    let facing = next;
    try {
      stream = await open({ exact: next });
    } catch {
      facing = previous;
      stream = await open({ ideal: previous }).catch(() => null);
      announce(t("cameraSwitchFailed"));
    }
    const track = stream ? stream.getVideoTracks()[0] : null;
    setVideoTrack(track);
    if (track && !track.getSettings().facingMode) call.facing = facing;
    if (call.videoSender) await call.videoSender.replaceTrack(track).catch((error) => warn("replacing the video track failed:", error.name));
    renderControls();
  }

  function announce(text) {
    const element = $("state");
    element.textContent = text;
    setTimeout(renderState, 4000);
  }

  // ---- Snapshots ----------------------------------------------------------

  /**
   * Returns the resident's remote video entry if it has a decoded frame, or
   * null. The `room` message names the resident, and each remote track's
   * stream id is its publisher's participant id.
   */
  function decodedResidentVideo() {
    if (!call.residentId) return null;
    for (const entry of call.remote.values()) {
      const { element, participantId } = entry;
      if (element.tagName !== "VIDEO" || participantId !== call.residentId) continue;
      if (element.videoWidth > 0 && element.readyState >= 2) return entry;
    }
    return null;
  }

  /** Encodes the current frame of `video` as a JPEG blob. */
  function encodeFrame(video) {
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve, reject) => {
      canvas.toBlob(
        (blob) => (blob ? resolve(blob) : reject(new Error("encoding"))),
        "image/jpeg",
        SNAPSHOT_QUALITY,
      );
    });
  }

  /** Saves the resident's current video frame to the session record. */
  async function saveSnapshot() {
    if (call.savingSnapshot) return;
    const resident = decodedResidentVideo();
    if (!resident) {
      call.lastSnapshot = { ok: false, detail: "no resident video" };
      announce(t("snapshotNoVideo"));
      return;
    }
    call.savingSnapshot = true;
    renderControls();
    try {
      const blob = await encodeFrame(resident.element);
      const response = await fetch("/snapshots", {
        method: "POST",
        headers: { Authorization: `Bearer ${token}`, "Content-Type": "image/jpeg" },
        body: blob,
      });
      if (response.status !== 201) throw new Error(`HTTP ${response.status}`);
      const reply = await response.json();
      call.lastSnapshot = {
        ok: true,
        snapshotId: reply.snapshot_id,
        sha256: reply.sha256,
        sizeBytes: reply.size_bytes,
        participantId: resident.participantId,
      };
      announce(t("snapshotSaved", { hash: String(reply.sha256).slice(0, SHORT_HASH_DIGITS) }));
    } catch (error) {
      const detail = error.message || error.name || "error";
      warn("saving the snapshot failed:", detail);
      call.lastSnapshot = { ok: false, detail };
      announce(t("snapshotFailed", { detail }));
    } finally {
      call.savingSnapshot = false;
      renderControls();
    }
  }

  // ---- Joining and signalling --------------------------------------------

  function webSocketUrl() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
  }

  function send(ws, message) {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ v: PROTOCOL_VERSION, ...message }));
  }

  function gatheringComplete(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, GATHERING_TIMEOUT_MS);
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function startCall() {
    showView("call");
    setState("connecting");
    try {
      await acquireMedia();
    } catch (error) {
      showProblem("mediaFailed", error.name || "error", true);
      return;
    }
    renderControls();
    renderWaiting();
    connect();
  }

  async function connect() {
    clearTimeout(call.reconnectTimer);
    const pc = new RTCPeerConnection({ iceServers: [], bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" });
    call.pc = pc;
    call.connections += 1;
    call.videoSender = null;
    call.restartWanted = false;
    // Send-receive, because the server reuses these sections for the first
    // remote audio and video before it adds new ones.
    if (call.audioTrack) pc.addTransceiver(call.audioTrack, { direction: "sendrecv" });
    if (call.videoTrack) {
      const init = { direction: "sendrecv" };
      // The resident's scene goes to every officer, each over its own link,
      // so it is sent in three encodings the server chooses from.
      if (role === "resident") init.sendEncodings = RESIDENT_ENCODINGS.map((encoding) => ({ ...encoding }));
      call.videoSender = pc.addTransceiver(call.videoTrack, init).sender;
    }
    // An observer, or an officer without devices, offers one receive-only section.
    if (!call.audioTrack && !call.videoTrack) pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addEventListener("track", (event) => addRemoteTrack(pc, event.transceiver));
    pc.addEventListener("connectionstatechange", () => onConnectionState(pc));

    const ws = openSocket(pc);
    const opened = new Promise((resolve, reject) => {
      ws.addEventListener("open", resolve, { once: true });
      ws.addEventListener("close", () => reject(new Error("WebSocket closed")), { once: true });
    });

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await gatheringComplete(pc);
      await opened;
    } catch {
      return; // The close listener takes over.
    }
    if (call.ws === ws) send(ws, { type: "offer", sdp: pc.localDescription.sdp });
    startMonitor();
  }

  /**
   * Opens the WebSocket for `pc` and makes it the current one. Server
   * messages are handled one at a time, in order.
   */
  function openSocket(pc) {
    const ws = new WebSocket(webSocketUrl());
    call.ws = ws;
    let pending = Promise.resolve();
    ws.addEventListener("message", (event) => {
      pending = pending
        .then(() => onMessage(ws, pc, event.data))
        .catch((error) => warn("handling a server message failed:", error));
    });
    ws.addEventListener("close", () => {
      if (call.ws !== ws) return;
      // During an ICE restart the monitor opens a new socket and resumes
      // the session, once a second while the network is down.
      if (call.recovery && call.pc === pc) call.ws = null;
      else onTransportLost();
    });
    return ws;
  }

  async function onMessage(ws, pc, data) {
    if (call.ws !== ws || call.pc !== pc) return;
    const message = JSON.parse(data);
    switch (message.type) {
      case "joined":
        call.joinedOnce = true;
        call.participantId = message.participant_id;
        break;
      case "resumed":
        if (call.recovery) {
          call.recovery.resuming = false;
          call.recovery.pongAt = Date.now();
          await restartIce(ws, pc);
        }
        break;
      case "restart_ice":
        // The server lost the media path; a restart offer recovers it.
        if (pc.signalingState === "stable") await restartIce(ws, pc);
        else call.restartWanted = true;
        break;
      case "pong":
        if (call.recovery && !call.recovery.resuming && !call.recovery.pongAt) {
          call.recovery.pongAt = Date.now();
          await restartIce(ws, pc);
        }
        break;
      case "answer":
        // The answer to the first offer or to an ICE restart offer.
        if (pc.signalingState !== "have-local-offer") {
          warn("ignored an answer in signalling state", pc.signalingState);
          break;
        }
        await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        syncRemoteTracks(pc);
        break;
      case "offer":
        // The server sends no further offer until this one is answered, so
        // a renegotiation that fails or stalls would freeze the call: rejoin
        // with a fresh connection instead (the server replaces the old one).
        try {
          await withTimeout(answerOffer(ws, pc, message.sdp), RENEGOTIATION_TIMEOUT_MS);
        } catch (error) {
          warn("answering the server's offer failed; rejoining:", error);
          if (call.ws === ws) onTransportLost();
          break;
        }
        if (call.restartWanted) await restartIce(ws, pc);
        break;
      case "room":
        call.residentId = (message.participants || []).find((p) => p.resident)?.participant_id ?? null;
        renderSpeaker();
        break;
      case "active_speaker":
        call.activeSpeaker = message.participant_id || null;
        renderSpeaker();
        break;
      case "quality":
        break;
      case "layers":
        await applyLayers(pc, message.mid, message.active || []);
        break;
      case "ended":
        endCall(endedKey(message.reason), message.reason);
        break;
      case "error":
        warn("the server reported an error:", message.message);
        if (call.recovery && /nothing to resume/.test(String(message.message))) {
          // The session is gone: join again with a new peer connection.
          onTransportLost();
          break;
        }
        // Before the first answer the server closes the socket after an
        // error (room full, participant removed), so retrying cannot help.
        if (!pc.remoteDescription) {
          call.ended = true;
          teardown();
          stopLocalMedia();
          showProblem("joinFailed", message.message, false);
        }
        break;
      default:
        warn("ignored a server message of type", message.type);
    }
  }

  /**
   * Sends only the simulcast encodings the server names for the track in
   * m-section `mid`; the server pauses those no one receives.
   */
  async function applyLayers(pc, mid, active) {
    const transceiver = pc.getTransceivers().find((t) => t.mid === mid);
    if (!transceiver) return;
    const parameters = transceiver.sender.getParameters();
    if (!parameters.encodings || parameters.encodings.length < 2) return;
    let changed = false;
    for (const encoding of parameters.encodings) {
      const send = active.includes(encoding.rid);
      if (encoding.active !== send) {
        encoding.active = send;
        changed = true;
      }
    }
    if (!changed) return;
    await transceiver.sender.setParameters(parameters).catch((error) => warn("changing the simulcast encodings failed:", error.name));
  }

  async function answerOffer(ws, pc, sdp) {
    if (pc.signalingState === "have-local-offer") {
      // Glare: the server keeps its offer, so this page rolls its own back
      // and sends it again once this offer is answered.
      await pc.setLocalDescription({ type: "rollback" });
      call.restartWanted = true;
    }
    await pc.setRemoteDescription({ type: "offer", sdp });
    await pc.setLocalDescription();
    send(ws, { type: "answer", sdp: pc.localDescription.sdp });
    call.offersAnswered += 1;
    syncRemoteTracks(pc);
  }

  function withTimeout(promise, ms) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
  }

  function endedKey(reason) {
    const text = String(reason || "").toLowerCase();
    if (text.includes("replaced")) return "endedReplaced";
    if (text.includes("room") && text.includes("clos")) return "endedRoomClosed";
    if (text.includes("remov")) return "endedRemoved";
    return "endedOther";
  }

  function onConnectionState(pc) {
    if (pc !== call.pc) return;
    switch (pc.connectionState) {
      case "connected":
        // Also after ICE recovered by itself before the restart.
        call.reconnectAttempts = 0;
        if (call.recovery) finishRecovery();
        else setState("live");
        keepScreenOn();
        break;
      case "disconnected":
      case "failed":
        startRecovery(`ICE ${pc.connectionState}`);
        break;
      default:
        break;
    }
  }

  // ---- ICE restart --------------------------------------------------------

  /** Checks every second whether media still arrives and drives a recovery. */
  function startMonitor() {
    clearInterval(call.monitorTimer);
    call.bytesReceived = 0;
    call.bytesGrewAt = Date.now();
    call.monitorTimer = setInterval(monitorTick, MONITOR_INTERVAL_MS);
  }

  async function monitorTick() {
    const { pc, ws } = call;
    if (!pc || call.ended) return;
    const now = Date.now();
    let bytes = 0;
    try {
      for (const entry of (await pc.getStats()).values()) {
        if (entry.type === "transport") bytes += entry.bytesReceived || 0;
      }
    } catch {
      return;
    }
    if (pc !== call.pc) return;
    const grew = bytes > call.bytesReceived;
    if (grew) {
      call.bytesReceived = bytes;
      call.bytesGrewAt = now;
    }

    const recovery = call.recovery;
    if (!recovery) {
      // NOTE: a call whose every remote track is muted by the dispatcher
      // still receives RTCP, but a call with nothing to receive can stall
      // here and restart ICE without need. That restart is harmless.
      const hasRemote = call.remote.size > 0;
      if (call.state === "live" && hasRemote && now - call.bytesGrewAt > STALL_MS) startRecovery("media stalled");
      return;
    }
    if (recovery.restartSent && grew && pc.connectionState === "connected") {
      finishRecovery();
      return;
    }
    if (now > recovery.deadline) {
      warn("the ICE restart did not recover the call; rejoining");
      onTransportLost();
      return;
    }
    if (recovery.pongAt) return;
    if (!ws || now - recovery.pingSentAt > PONG_TIMEOUT_MS) {
      // The socket is gone or silent: replace it and resume the session.
      warn("no reply on the WebSocket; opening a new one");
      resumeSocket(pc);
    } else if (!recovery.resuming && ws.readyState === WebSocket.OPEN) {
      send(ws, { type: "ping" });
    }
  }

  /**
   * Starts recovering a lost connection: checks the WebSocket with a ping
   * (replacing it if it stays silent), then restarts ICE over it.
   */
  function startRecovery(reason) {
    if (call.ended || call.recovery || !call.pc) return;
    warn("connection lost:", reason, "; restarting ICE");
    const now = Date.now();
    call.recovery = { reason, deadline: now + RECOVERY_TIMEOUT_MS, pingSentAt: now, pongAt: 0, resuming: false, restartSent: false };
    setState("reconnecting");
    if (call.ws && call.ws.readyState === WebSocket.OPEN) send(call.ws, { type: "ping" });
    else resumeSocket(call.pc);
  }

  function finishRecovery() {
    call.recovery = null;
    call.bytesGrewAt = Date.now();
    setState("live");
  }

  /** Replaces the current WebSocket with a new one that resumes the session. */
  function resumeSocket(pc) {
    const old = call.ws;
    if (old) {
      call.ws = null;
      old.close(1000);
    }
    if (!call.recovery) return;
    call.recovery.pingSentAt = Date.now();
    call.recovery.resuming = true;
    const ws = openSocket(pc);
    ws.addEventListener("open", () => send(ws, { type: "resume" }), { once: true });
  }

  /** Sends an ICE restart offer once the signalling state allows one. */
  async function restartIce(ws, pc) {
    if (call.ws !== ws || call.pc !== pc) return;
    if (pc.signalingState !== "stable") {
      call.restartWanted = true;
      return;
    }
    call.restartWanted = false;
    await pc.setLocalDescription(await pc.createOffer({ iceRestart: true }));
    await gatheringComplete(pc);
    if (call.ws !== ws || pc.signalingState !== "have-local-offer") return;
    send(ws, { type: "offer", sdp: pc.localDescription.sdp });
    call.iceRestarts += 1;
    if (call.recovery) call.recovery.restartSent = true;
  }

  /** Rejoins with a new WebSocket and peer connection after a loss. */
  function onTransportLost() {
    if (call.ended) return;
    teardown();
    call.reconnectAttempts += 1;
    const expired = claims.exp && claims.exp * 1000 <= Date.now();
    if (!call.joinedOnce && call.reconnectAttempts >= MAX_FIRST_JOIN_ATTEMPTS) {
      call.ended = true;
      stopLocalMedia();
      showProblem(expired ? "expiredLink" : "joinFailed", "WebSocket", true);
      return;
    }
    if (expired || call.reconnectAttempts > MAX_RECONNECT_ATTEMPTS) {
      endCall("endedConnectionLost", "");
      return;
    }
    setState(call.joinedOnce ? "reconnecting" : "connecting");
    const delay = RECONNECT_DELAYS_MS[Math.min(call.reconnectAttempts, RECONNECT_DELAYS_MS.length) - 1];
    call.reconnectTimer = setTimeout(connect, delay);
  }

  function teardown() {
    clearTimeout(call.reconnectTimer);
    clearInterval(call.monitorTimer);
    call.recovery = null;
    call.restartWanted = false;
    const { ws, pc } = call;
    call.ws = null;
    call.pc = null;
    call.videoSender = null;
    if (ws) ws.close(1000);
    if (pc) pc.close();
    for (const id of [...call.remote.keys()]) removeRemote(id);
  }

  function endCall(key, reason) {
    call.ended = true;
    call.ending = { key, reason };
    teardown();
    stopLocalMedia();
    releaseScreen();
    setState("ended");
    showView("ended");
    renderEnded();
    $("ended-title").focus();
  }

  function leave() {
    if (call.ws) send(call.ws, { type: "leave" });
    endCall("endedYouLeft", "");
  }

  // ---- Remote tracks ------------------------------------------------------

  function addRemoteTrack(pc, transceiver) {
    if (pc !== call.pc) return;
    const track = transceiver.receiver.track;
    if (call.remote.has(track.id)) return;

    const element = document.createElement(track.kind === "video" ? "video" : "audio");
    element.autoplay = true;
    element.srcObject = new MediaStream([track]);
    if (track.kind === "video") {
      // Sound plays through the audio elements, so the video stays muted.
      element.muted = true;
      element.playsInline = true;
      element.setAttribute("aria-label", t("remoteVideo"));
      $("remote").append(element);
    } else {
      element.muted = call.remoteMuted;
      $("remote-audio").append(element);
    }
    element.play().catch(() => {
      if (track.kind === "audio") {
        call.soundBlocked = true;
        renderControls();
      }
    });
    track.addEventListener("ended", () => removeRemote(track.id));
    const participantId = publishersByMid(pc).get(transceiver.mid) ?? null;
    element.dataset.participant = participantId || "";
    call.remote.set(track.id, { element, transceiver, participantId });
    renderWaiting();
    renderSpeaker();
  }

  /**
   * Maps each mid of the remote description to the stream id of its
   * `a=msid` line, which the server sets to the publisher's participant id.
   */
  function publishersByMid(pc) {
    const publishers = new Map();
    const sdp = pc.remoteDescription ? pc.remoteDescription.sdp : "";
    for (const section of sdp.split(/\r?\nm=/).slice(1)) {
      const mid = /^a=mid:(\S+)/m.exec(section);
      const msid = /^a=msid:(\S+)/m.exec(section);
      if (mid && msid && msid[1] !== "-") publishers.set(mid[1], msid[1]);
    }
    return publishers;
  }

  /**
   * Drops remote tracks whose section the last negotiation made inactive,
   * and updates which participant each remaining one comes from, because
   * the server may reuse a section for another publisher.
   */
  function syncRemoteTracks(pc) {
    if (pc !== call.pc) return;
    const publishers = publishersByMid(pc);
    for (const [id, entry] of call.remote) {
      const direction = entry.transceiver.currentDirection;
      if (direction === "inactive" || direction === "sendonly" || direction === "stopped") {
        removeRemote(id);
        continue;
      }
      entry.participantId = publishers.get(entry.transceiver.mid) ?? entry.participantId;
      entry.element.dataset.participant = entry.participantId || "";
    }
    renderWaiting();
    renderSpeaker();
  }

  function removeRemote(id) {
    const entry = call.remote.get(id);
    if (!entry) return;
    call.remote.delete(id);
    entry.element.srcObject = null;
    entry.element.remove();
    renderWaiting();
  }

  async function enableSound() {
    for (const { element } of call.remote.values()) await element.play().catch(() => {});
    call.soundBlocked = false;
    renderControls();
  }

  // ---- Screen wake lock ---------------------------------------------------

  async function keepScreenOn() {
    if (!("wakeLock" in navigator) || call.wakeLock || document.visibilityState !== "visible") return;
    try {
      call.wakeLock = await navigator.wakeLock.request("screen");
      call.wakeLock.addEventListener("release", () => (call.wakeLock = null));
    } catch {
      // Battery saver or policy. The call works without it.
    }
  }

  function releaseScreen() {
    if (call.wakeLock) call.wakeLock.release().catch(() => {});
  }

  // ---- Diagnostics for tests and support ----------------------------------

  /** Summarises the peer connection's `getStats()` for tests and support. The result contains no token. */
  window.vprJoinStats = async () => {
    const summary = {
      role,
      state: call.state,
      language: call.language,
      connections: call.connections,
      stateHistory: [...call.stateHistory],
      lastSnapshot: call.lastSnapshot,
      connectionState: call.pc ? call.pc.connectionState : "closed",
      remoteVideos: [...call.remote.values()].filter((e) => e.element.tagName === "VIDEO").length,
      remoteAudios: [...call.remote.values()].filter((e) => e.element.tagName === "AUDIO").length,
      participantId: call.participantId,
      residentId: call.residentId,
      activeSpeaker: call.activeSpeaker,
      remoteVideoParticipants: [...call.remote.values()]
        .filter((e) => e.element.tagName === "VIDEO")
        .map((e) => e.participantId),
      iceRestarts: call.iceRestarts,
      warnings: [...call.warnings],
      inboundVideo: { framesDecoded: 0, bytesReceived: 0, frameWidth: 0 },
      inboundAudio: { bytesReceived: 0 },
      outboundVideo: { framesEncoded: 0, bytesSent: 0 },
      outboundAudio: { bytesSent: 0 },
      encodings: {},
    };
    if (!call.pc) return summary;
    summary.signalingState = call.pc.signalingState;
    summary.transceivers = call.pc.getTransceivers().map((transceiver) => ({
      mid: transceiver.mid,
      kind: transceiver.receiver.track.kind,
      direction: transceiver.direction,
      currentDirection: transceiver.currentDirection,
    }));
    summary.offersAnswered = call.offersAnswered;
    if (call.videoSender) {
      summary.activeEncodings = (call.videoSender.getParameters().encodings || [])
        .filter((encoding) => encoding.rid && encoding.active)
        .map((encoding) => encoding.rid);
    }
    const report = await call.pc.getStats();
    for (const entry of report.values()) {
      if (entry.type === "inbound-rtp" && entry.kind === "video") {
        summary.inboundVideo.framesDecoded += entry.framesDecoded || 0;
        summary.inboundVideo.bytesReceived += entry.bytesReceived || 0;
        summary.inboundVideo.frameWidth = Math.max(summary.inboundVideo.frameWidth, entry.frameWidth || 0);
      } else if (entry.type === "inbound-rtp" && entry.kind === "audio") {
        summary.inboundAudio.bytesReceived += entry.bytesReceived || 0;
      } else if (entry.type === "outbound-rtp" && entry.kind === "video") {
        summary.outboundVideo.framesEncoded += entry.framesEncoded || 0;
        summary.outboundVideo.bytesSent += entry.bytesSent || 0;
        if (entry.rid) summary.encodings[entry.rid] = { bytesSent: entry.bytesSent || 0, frameWidth: entry.frameWidth || 0 };
      } else if (entry.type === "outbound-rtp" && entry.kind === "audio") {
        summary.outboundAudio.bytesSent += entry.bytesSent || 0;
      }
    }
    return summary;
  };

  // ---- Start --------------------------------------------------------------

  function init() {
    document.body.classList.add(`role-${role}`);
    $("ended-title").tabIndex = -1;
    $("language").addEventListener("click", toggleLanguage);
    $("start").addEventListener("click", startCall);
    $("retry").addEventListener("click", () => {
      call.ended = false;
      call.problem = null;
      call.reconnectAttempts = 0;
      startCall();
    });
    $("mute-mic").addEventListener("click", () => {
      call.micMuted = !call.micMuted;
      if (call.audioTrack) call.audioTrack.enabled = !call.micMuted;
      renderControls();
    });
    $("switch-camera").addEventListener("click", switchCamera);
    $("mute-remote").addEventListener("click", () => {
      call.remoteMuted = !call.remoteMuted;
      for (const { element } of call.remote.values()) if (element.tagName === "AUDIO") element.muted = call.remoteMuted;
      renderControls();
    });
    $("enable-sound").addEventListener("click", enableSound);
    $("save-snapshot").addEventListener("click", saveSnapshot);
    $("leave").addEventListener("click", leave);
    document.addEventListener("visibilitychange", () => {
      if (call.state === "live") keepScreenOn();
    });
    // Closing or reloading the page sends no `leave`: a reload joins again
    // and replaces this connection with the same participant, and a closed
    // page ends when the server's resume grace runs out.

    applyLanguage();
    if (!claims) return showProblem("invalidLink", "", false);
    if (claims.exp && claims.exp * 1000 <= Date.now()) return showProblem("expiredLink", "", false);
    if (role === "resident") {
      showView("consent");
    } else {
      startCall();
    }
  }

  init();
})();
