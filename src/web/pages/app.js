// slotd's reference pages: the guide's journey (waiting room → calendar → times → booking →
// printable confirmation) over gRPC-Web, in Chinese and English. Plain JS, no build step.
"use strict";

const T = {
  zh: {
    title: "美国签证预约", lang: "English", roomTitle: "欢迎来到等候室！",
    roomText: "请停留在本页面，您很快会被引导至签证申请和预约系统。无需刷新。",
    ticket: "排队号", position: "当前位置", ahead: "前面人数", wait: "预计等待",
    seconds: "秒", minutes: "分钟", admitted: "轮到您了，正在进入预约……", expired: "您的排队已失效。",
    rejoin: "重新排队", calendarTitle: "选择日期", post: "使馆/领事馆", category: "签证类别",
    dates: "可预约日期", times: "可预约时间", seats: "剩余名额", noDates: "暂无可预约日期",
    pickDate: "请先选择日期", bookingTitle: "申请人信息", primary: "主申请人", dependent: "同行人员",
    passport_number: "护照号码", surname: "姓", given_name: "名", ds160_confirmation: "DS-160 确认编号",
    receipt_number: "收据编号", addDependent: "添加同行人员", remove: "删除", book: "确认预约",
    back: "返回", slot: "预约时间", confirmationTitle: "预约确认", confirmationNumber: "确认号码",
    print: "打印", again: "新的预约", live: "● 实时更新", connecting: "连接中……", error: "出错了",
  },
  en: {
    title: "U.S. Visa Scheduling", lang: "中文", roomTitle: "Welcome to the waiting room!",
    roomText: "Please stay on this page and you will be redirected to the Visa application and scheduling portal shortly. No need to refresh.",
    ticket: "Ticket", position: "Place in line", ahead: "People ahead", wait: "Estimated wait",
    seconds: "s", minutes: "min", admitted: "It is your turn: entering the scheduling portal…", expired: "Your place in line has lapsed.",
    rejoin: "Join again", calendarTitle: "Choose a date", post: "Embassy / consulate", category: "Visa category",
    dates: "Dates with availability", times: "Available times", seats: "seats", noDates: "No dates available",
    pickDate: "Choose a date first", bookingTitle: "Applicants", primary: "Primary applicant", dependent: "Dependent",
    passport_number: "Passport number", surname: "Surname", given_name: "Given name", ds160_confirmation: "DS-160 confirmation number",
    receipt_number: "Receipt number", addDependent: "Add a dependent", remove: "Remove", book: "Book the appointment",
    back: "Back", slot: "Appointment", confirmationTitle: "Appointment confirmation", confirmationNumber: "Confirmation number",
    print: "Print", again: "New appointment", live: "● live", connecting: "connecting…", error: "Error",
  },
};

const FIELDS = ["passport_number", "surname", "given_name", "ds160_confirmation", "receipt_number"];
const store = window.localStorage;
const session = window.sessionStorage;
const state = {
  lang: store.getItem("slotd.lang") || "zh",
  view: "room",
  token: "",
  ticket: null,
  posts: [],
  post: "BEIJING",
  category: "ALL_OTHERS",
  seats: new Map(), // "YYYY-MM-DD" -> Map("HH:MM" -> seats)
  date: "",
  time: "",
  watch: null,
  applicants: 1,
};

const $ = (id) => document.getElementById(id);
// A note that follows the language (a key of T) or a server message as it came (no key).
function note(id, key, extra) {
  const el = $(id);
  if (key) el.dataset.i18n = key;
  else delete el.dataset.i18n;
  el.textContent = key ? t(key) : extra;
}
const t = (key) => (T[state.lang] && T[state.lang][key]) || key;

function randomKey(bytes) {
  const raw = crypto.getRandomValues(new Uint8Array(bytes));
  return btoa(String.fromCharCode(...raw)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// The client key identifies this browser to the waiting room: kept in localStorage, so a
// reload joins again with it and gets the same place back.
function clientKey() {
  let key = store.getItem("slotd.clientKey");
  if (!key) {
    key = randomKey(16);
    store.setItem("slotd.clientKey", key);
  }
  return key;
}

function show(view) {
  state.view = view;
  for (const v of ["room", "calendar", "booking", "confirmation"]) $(v).hidden = v !== view;
  document.body.dataset.view = view;
  renderTexts();
}

function renderTexts() {
  document.documentElement.lang = state.lang === "zh" ? "zh-Hans" : "en";
  document.title = t("title");
  for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  renderTicket();
  renderCalendar();
  renderApplicants(false);
}

// ---- waiting room ----

async function enterRoom() {
  show("room");
  $("room-note").textContent = t("connecting");
  let joined;
  try {
    joined = await grpcUnary("WaitingRoomService/Join", S.JoinRequest, { client_key: clientKey() }, S.JoinResponse);
  } catch (e) {
    if (e.reason === "WAITING_ROOM_DISABLED") return enterCalendar();
    $("room-note").textContent = t("error") + ": " + e.message;
    return;
  }
  onTicket(joined.status);
  watchRoom(joined.status.ticket_id, joined.ticket_secret);
}

function onTicket(status) {
  state.ticket = status;
  const firstKey = "slotd.firstPosition." + status.ticket_id;
  if (status.position > 0 && !store.getItem(firstKey)) store.setItem(firstKey, String(status.position));
  state.firstPosition = Number(store.getItem(firstKey) || status.position || 1);
  renderTicket();
  if (status.state === 2) {
    state.token = status.admission_token;
    $("room-note").textContent = t("admitted");
    if (state.watch) state.watch.abort();
    setTimeout(enterCalendar, 300);
  } else if (status.state >= 3) {
    $("room-note").textContent = t("expired");
    $("rejoin").hidden = false;
  } else {
    $("room-note").textContent = "";
  }
}

function renderTicket() {
  const s = state.ticket;
  if (!s) return;
  $("room-ticket").textContent = s.ticket_number;
  $("room-position").textContent = s.position;
  $("room-ahead").textContent = s.people_ahead;
  const w = s.estimated_wait_seconds;
  $("room-wait").textContent = w < 120 ? w + " " + t("seconds") : Math.round(w / 60) + " " + t("minutes");
  // The share of the line ahead at joining that has gone in since.
  const done = s.state === 2 ? 1 : (state.firstPosition - s.position) / Math.max(state.firstPosition, 1);
  $("room-progress").value = Math.round(Math.max(0, Math.min(1, done)) * 100);
}

// One Watch stream at a time; it is opened again when the server ends it (its lifetime) or the
// network drops it. Nothing polls.
function watchRoom(ticketId, secret) {
  const ctl = new AbortController();
  state.watch = ctl;
  grpcCall("WaitingRoomService/Watch", S.WatchRequest, { ticket_id: ticketId, ticket_secret: secret }, S.TicketStatus, onTicket, { signal: ctl.signal })
    .then(() => !ctl.signal.aborted && state.view === "room" && watchRoom(ticketId, secret))
    .catch((e) => {
      if (ctl.signal.aborted || state.view !== "room") return;
      $("room-note").textContent = t("error") + ": " + e.message;
      setTimeout(() => state.view === "room" && watchRoom(ticketId, secret), 2000);
    });
}

// ---- calendar ----

function today(timeZone) {
  return new Intl.DateTimeFormat("en-CA", { timeZone, year: "numeric", month: "2-digit", day: "2-digit" }).format(new Date());
}

function addDays(date, n) {
  const d = new Date(date + "T00:00:00Z");
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

async function enterCalendar() {
  show("calendar");
  if (!state.posts.length) {
    try {
      state.posts = (await grpcUnary("CalendarService/ListPosts", S.ListPostsRequest, {}, S.ListPostsResponse, { token: state.token })).posts;
    } catch (e) {
      $("calendar-note").textContent = t("error") + ": " + e.message;
      return;
    }
  }
  renderPosts();
  watchSeats();
}

function currentPost() {
  return state.posts.find((p) => p.post_id === state.post) || state.posts[0];
}

function renderPosts() {
  const posts = $("post");
  const name = (x) => (state.lang === "zh" ? x.name_zh : x.name_en);
  posts.replaceChildren(...state.posts.map((p) => new Option(name(p), p.post_id, false, p.post_id === state.post)));
  const post = currentPost();
  if (!post) return;
  if (!post.categories.some((c) => c.category_id === state.category)) state.category = post.categories[0].category_id;
  $("category").replaceChildren(...post.categories.map((c) => new Option(name(c), c.category_id, false, c.category_id === state.category)));
}

// WatchAvailability keeps the dates and times live: a snapshot, then changes as they happen.
function watchSeats() {
  if (state.seatsWatch) state.seatsWatch.abort();
  const post = currentPost();
  if (!post) return;
  const ctl = new AbortController();
  state.seatsWatch = ctl;
  const from = today(post.time_zone);
  const request = { post_id: post.post_id, category: state.category, from_date: from, to_date: addDays(from, 59) };
  note("calendar-note", "connecting");
  grpcCall("CalendarService/WatchAvailability", S.WatchAvailabilityRequest, request, S.AvailabilityUpdate, (u) => {
    if (u.snapshot) state.seats = new Map();
    for (const s of u.slots) {
      if (!state.seats.has(s.date)) state.seats.set(s.date, new Map());
      state.seats.get(s.date).set(s.time, s.seats_available);
    }
    note("calendar-note", "live");
    renderCalendar();
  }, { signal: ctl.signal, token: state.token })
    .then(() => !ctl.signal.aborted && watchSeats())
    .catch((e) => {
      if (ctl.signal.aborted) return;
      $("calendar-note").textContent = t("error") + ": " + e.message;
      setTimeout(() => !ctl.signal.aborted && watchSeats(), 2000);
    });
}

function renderCalendar() {
  if (state.view !== "calendar") return;
  const dates = [...state.seats.entries()]
    .map(([date, times]) => [date, [...times.values()].reduce((a, b) => a + b, 0)])
    .filter(([, seats]) => seats > 0)
    .sort();
  $("dates").replaceChildren(...dates.map(([date, seats]) => {
    const b = document.createElement("button");
    b.className = "date" + (date === state.date ? " chosen" : "");
    b.dataset.date = date;
    b.textContent = date.replace(/-/g, "/") + " · " + seats + " " + t("seats");
    b.onclick = () => {
      state.date = date;
      renderCalendar();
    };
    return b;
  }));
  if (!dates.length) $("dates").textContent = t("noDates");
  const times = [...(state.seats.get(state.date) || new Map()).entries()].filter(([, n]) => n > 0).sort();
  $("times").replaceChildren(...times.map(([time, seats]) => {
    const b = document.createElement("button");
    b.className = "time";
    b.dataset.time = time;
    b.textContent = time + " · " + seats + " " + t("seats");
    b.onclick = () => enterBooking(time);
    return b;
  }));
  if (!state.date) $("times").textContent = t("pickDate");
}

// ---- booking ----

function enterBooking(time) {
  state.time = time;
  show("booking");
  const post = currentPost();
  $("booking-slot").textContent = (state.lang === "zh" ? post.name_zh : post.name_en) + " · " + state.date + " " + time;
  clearErrors();
}

function applicantFieldset(i) {
  const fs = document.createElement("fieldset");
  fs.className = "applicant";
  fs.dataset.index = i;
  const legend = document.createElement("legend");
  legend.textContent = i === 0 ? t("primary") : t("dependent") + " " + i;
  fs.append(legend);
  for (const f of FIELDS) {
    const label = document.createElement("label");
    const span = document.createElement("span");
    span.textContent = t(f);
    const input = document.createElement("input");
    input.name = f;
    input.id = `applicants-${i}-${f}`;
    input.autocomplete = "off";
    const err = document.createElement("span");
    err.className = "error";
    err.dataset.for = `applicants[${i}].${f}`;
    err.id = `error-applicants-${i}-${f}`;
    label.append(span, input, err);
    fs.append(label);
  }
  if (i > 0) {
    const rm = document.createElement("button");
    rm.type = "button";
    rm.textContent = t("remove");
    rm.className = "remove";
    rm.onclick = () => {
      readApplicants();
      state.values.splice(i, 1);
      state.applicants -= 1;
      renderApplicants(true);
    };
    fs.append(rm);
  }
  return fs;
}

function readApplicants() {
  state.values = [...document.querySelectorAll("#applicants fieldset")].map((fs) => {
    const a = {};
    for (const f of FIELDS) a[f] = fs.querySelector(`[name=${f}]`).value.trim();
    return a;
  });
  return state.values;
}

function renderApplicants(force) {
  const box = $("applicants");
  if (!box) return;
  const keep = force ? state.values || [] : box.children.length ? readApplicants() : state.values || [];
  box.replaceChildren(...Array.from({ length: state.applicants }, (_, i) => applicantFieldset(i)));
  keep.forEach((a, i) => {
    const fs = box.children[i];
    if (fs) for (const f of FIELDS) fs.querySelector(`[name=${f}]`).value = a[f] || "";
  });
}

function clearErrors() {
  for (const el of document.querySelectorAll("#booking .error")) el.textContent = "";
  for (const el of document.querySelectorAll("#booking .invalid")) el.classList.remove("invalid");
  $("booking-error").textContent = "";
}

// Every refusal beside the field the server names: BadRequest violations name the field
// (applicants[1].receipt_number); ErrorInfo metadata names the value (receipt_number: X).
function showRefusal(e) {
  let placed = 0;
  const put = (field, text) => {
    const span = document.querySelector(`#booking .error[data-for="${CSS.escape(field)}"]`);
    if (!span) return false;
    span.textContent = text;
    const input = span.parentElement.querySelector("input");
    if (input) input.classList.add("invalid");
    placed += 1;
    return true;
  };
  for (const v of e.violations) put(v.field, v.description);
  for (const [key, value] of Object.entries(e.metadata)) {
    if (!FIELDS.includes(key)) continue;
    document.querySelectorAll(`#applicants input[name=${key}]`).forEach((input) => {
      if (input.value.trim().toUpperCase() === String(value).toUpperCase()) {
        const i = input.closest("fieldset").dataset.index;
        put(`applicants[${i}].${key}`, e.message);
      }
    });
  }
  if (!placed) $("booking-error").textContent = e.message;
}

async function book(ev) {
  ev.preventDefault();
  clearErrors();
  const applicants = readApplicants();
  const post = currentPost();
  const request = {
    request_id: "web-" + randomKey(12).replace(/[^A-Za-z0-9]/g, "x"),
    slot: { post_id: post.post_id, category: state.category, date: state.date, time: state.time },
    applicants,
  };
  $("book").disabled = true;
  try {
    const reply = await grpcUnary("BookingService/BookAppointment", S.BookAppointmentRequest, request, S.BookAppointmentResponse, { token: state.token });
    const a = reply.appointment;
    session.setItem("slotd.confirmation", JSON.stringify({ number: a.confirmation_number, passport: a.applicants[0].passport_number }));
    await enterConfirmation();
  } catch (e) {
    showRefusal(e);
  } finally {
    $("book").disabled = false;
  }
}

// ---- confirmation ----

async function enterConfirmation() {
  const saved = JSON.parse(session.getItem("slotd.confirmation") || "null");
  if (!saved) return enterRoom();
  if (state.seatsWatch) state.seatsWatch.abort();
  show("confirmation");
  $("confirmation-number").textContent = saved.number;
  try {
    const page = await grpcUnary("BookingService/RenderConfirmation", S.RenderConfirmationRequest,
      { confirmation_number: saved.number, passport_number: saved.passport }, S.RenderConfirmationResponse);
    $("letter").srcdoc = page.html;
  } catch (e) {
    $("confirmation-note").textContent = t("error") + ": " + e.message;
  }
}

function startOver() {
  session.removeItem("slotd.confirmation");
  store.removeItem("slotd.clientKey");
  state.token = "";
  state.ticket = null;
  state.values = [];
  state.applicants = 1;
  renderApplicants(true);
  enterRoom();
}

window.addEventListener("DOMContentLoaded", () => {
  $("lang").onclick = () => {
    state.lang = state.lang === "zh" ? "en" : "zh";
    store.setItem("slotd.lang", state.lang);
    renderPosts();
    renderTexts();
  };
  $("rejoin").onclick = () => {
    $("rejoin").hidden = true;
    store.removeItem("slotd.clientKey");
    enterRoom();
  };
  $("post").onchange = () => {
    state.post = $("post").value;
    state.date = "";
    renderPosts();
    watchSeats();
  };
  $("category").onchange = () => {
    state.category = $("category").value;
    state.date = "";
    watchSeats();
  };
  $("add-dependent").onclick = () => {
    readApplicants();
    state.applicants += 1;
    renderApplicants(true);
  };
  $("booking-back").onclick = () => enterCalendar();
  $("booking-form").onsubmit = book;
  $("print").onclick = () => $("letter").contentWindow.print();
  $("again").onclick = startOver;
  renderApplicants(true);
  if (session.getItem("slotd.confirmation")) enterConfirmation();
  else enterRoom();
});
