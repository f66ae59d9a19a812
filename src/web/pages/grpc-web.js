// A small gRPC-Web client for slotd's reference pages: binary framing over fetch
// (application/grpc-web+proto), a minimal protobuf encoder/decoder for the messages the pages
// use (schemas below, field numbers from proto/slotd/v1/*.proto), and the status details
// (google.rpc.Status with BadRequest and ErrorInfo) of every refusal. No dependencies.
"use strict";

const Proto = (() => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();

  // schema: { field: [number, type, repeated?, subSchema?] }; types: string, uint, bool, msg.
  function encode(schema, value) {
    const out = [];
    const varint = (n) => {
      n = Number(n);
      while (n >= 0x80) {
        out.push((n % 0x80) | 0x80);
        n = Math.floor(n / 0x80);
      }
      out.push(n);
    };
    const bytes = (b) => {
      varint(b.length);
      for (const x of b) out.push(x);
    };
    for (const [name, [no, type, repeated, sub]] of Object.entries(schema)) {
      const v = value[name];
      if (v === undefined || v === null) continue;
      for (const item of repeated ? v : [v]) {
        if (type === "string") {
          if (item === "" && !repeated) continue;
          varint(no * 8 + 2);
          bytes(enc.encode(String(item)));
        } else if (type === "uint" || type === "bool") {
          const n = type === "bool" ? (item ? 1 : 0) : Number(item);
          if (n === 0 && !repeated) continue;
          varint(no * 8);
          varint(n);
        } else if (type === "msg") {
          varint(no * 8 + 2);
          bytes(encode(sub, item));
        }
      }
    }
    return Uint8Array.from(out);
  }

  function decode(schema, buf) {
    const byNo = {};
    const result = {};
    for (const [name, [no, type, repeated, sub]] of Object.entries(schema)) {
      byNo[no] = [name, type, repeated, sub];
      result[name] = repeated ? [] : type === "string" ? "" : type === "msg" ? null : type === "bool" ? false : 0;
    }
    let i = 0;
    const varint = () => {
      let n = 0;
      let mul = 1;
      for (;;) {
        if (i >= buf.length) throw new Error("truncated varint");
        const b = buf[i++];
        n += (b & 0x7f) * mul;
        mul *= 0x80;
        if (b < 0x80) return n;
      }
    };
    while (i < buf.length) {
      const key = varint();
      const no = Math.floor(key / 8);
      const wire = key % 8;
      let raw;
      if (wire === 0) raw = varint();
      else if (wire === 2) {
        const len = varint();
        raw = buf.subarray(i, i + len);
        i += len;
      } else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else throw new Error("unsupported wire type " + wire);
      const f = byNo[no];
      if (!f || raw === undefined) continue;
      const [name, type, repeated, sub] = f;
      let v;
      if (type === "string") v = dec.decode(raw);
      else if (type === "bytes") v = raw;
      else if (type === "uint") v = raw;
      else if (type === "bool") v = raw !== 0;
      else if (type === "msg") v = decode(sub, raw);
      if (repeated) result[name].push(v);
      else result[name] = v;
    }
    return result;
  }
  return { encode, decode };
})();

// Message schemas (field numbers as in the .proto files).
const S = {};
S.SlotRef = { post_id: [1, "string"], category: [2, "string"], date: [3, "string"], time: [4, "string"] };
S.Applicant = {
  passport_number: [1, "string"], given_name: [2, "string"], surname: [3, "string"],
  ds160_confirmation: [4, "string"], receipt_number: [5, "string"],
};
S.Appointment = {
  confirmation_number: [1, "string"], slot: [2, "msg", false, S.SlotRef],
  applicants: [3, "msg", true, S.Applicant], status: [4, "uint"],
  post_name_en: [7, "string"], post_name_zh: [8, "string"],
  post_address_en: [9, "string"], post_address_zh: [10, "string"],
  category_name_en: [11, "string"], category_name_zh: [12, "string"], time_zone: [14, "string"],
};
S.Category = { category_id: [1, "string"], name_en: [2, "string"], name_zh: [3, "string"] };
S.Post = {
  post_id: [1, "string"], kind: [2, "uint"], name_en: [3, "string"], name_zh: [4, "string"],
  address_en: [5, "string"], address_zh: [6, "string"], city: [7, "string"],
  postal_code: [8, "string"], time_zone: [9, "string"], categories: [10, "msg", true, S.Category],
};
S.ListPostsRequest = {};
S.ListPostsResponse = { posts: [1, "msg", true, S.Post] };
S.WatchAvailabilityRequest = { post_id: [1, "string"], category: [2, "string"], from_date: [3, "string"], to_date: [4, "string"] };
S.SlotSeats = { date: [1, "string"], time: [2, "string"], seats_available: [3, "uint"] };
S.AvailabilityUpdate = { snapshot: [1, "bool"], slots: [2, "msg", true, S.SlotSeats] };
S.TicketStatus = {
  ticket_id: [1, "string"], state: [2, "uint"], ticket_number: [3, "uint"], people_ahead: [4, "uint"],
  position: [5, "uint"], estimated_wait_seconds: [6, "uint"], admission_token: [7, "string"],
  session_expires_at: [8, "string"], admission_number: [9, "uint"],
};
S.JoinRequest = { client_key: [1, "string"] };
S.JoinResponse = { ticket_secret: [1, "string"], status: [2, "msg", false, S.TicketStatus] };
S.WatchRequest = { ticket_id: [1, "string"], ticket_secret: [2, "string"] };
S.BookAppointmentRequest = {
  request_id: [1, "string"], slot: [2, "msg", false, S.SlotRef], applicants: [3, "msg", true, S.Applicant],
};
S.BookAppointmentResponse = { appointment: [1, "msg", false, S.Appointment] };
S.RenderConfirmationRequest = { confirmation_number: [1, "string"], passport_number: [2, "string"] };
S.RenderConfirmationResponse = { content_type: [1, "string"], html: [2, "string"] };
// google.rpc.Status and the details slotd sends.
S.Any = { type_url: [1, "string"], value: [2, "bytes"] };
S.RpcStatus = { code: [1, "uint"], message: [2, "string"], details: [3, "msg", true, S.Any] };
S.FieldViolation = { field: [1, "string"], description: [2, "string"] };
S.BadRequest = { field_violations: [1, "msg", true, S.FieldViolation] };
S.MapEntry = { key: [1, "string"], value: [2, "string"] };
S.ErrorInfo = { reason: [1, "string"], domain: [2, "string"], metadata: [3, "msg", true, S.MapEntry] };

// A refused call: gRPC code, message, and the details (violations: [{field, description}],
// reason, metadata {key: value}).
class GrpcError extends Error {
  constructor(code, message, detailsBin) {
    super(message);
    this.code = code;
    this.violations = [];
    this.reason = "";
    this.metadata = {};
    if (!detailsBin) return;
    try {
      const b64 = detailsBin.replace(/-/g, "+").replace(/_/g, "/");
      const padded = b64 + "===".slice((b64.length + 3) % 4);
      const raw = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
      const status = Proto.decode(S.RpcStatus, raw);
      for (const any of status.details) {
        if (any.type_url.endsWith("google.rpc.BadRequest")) {
          this.violations = Proto.decode(S.BadRequest, any.value).field_violations;
        } else if (any.type_url.endsWith("google.rpc.ErrorInfo")) {
          const info = Proto.decode(S.ErrorInfo, any.value);
          this.reason = info.reason;
          for (const e of info.metadata) this.metadata[e.key] = e.value;
        }
      }
    } catch (e) {
      console.warn("undecodable status details", e);
    }
  }
}

function frame(bytes) {
  const out = new Uint8Array(5 + bytes.length);
  new DataView(out.buffer).setUint32(1, bytes.length);
  out.set(bytes, 5);
  return out;
}

function trailerMap(bytes) {
  const map = {};
  for (const line of new TextDecoder().decode(bytes).split("\r\n")) {
    const at = line.indexOf(":");
    if (at > 0) map[line.slice(0, at).trim().toLowerCase()] = line.slice(at + 1).trim();
  }
  return map;
}

function statusFrom(get) {
  const code = Number(get("grpc-status"));
  let message = get("grpc-message") || "";
  try {
    message = decodeURIComponent(message);
  } catch (_) {}
  return code === 0 ? null : new GrpcError(code, message, get("grpc-status-details-bin"));
}

// Calls `service/method` and hands each response message (decoded with `out`) to `onMessage`;
// resolves when the call ends OK, rejects with a GrpcError otherwise. `signal` cancels it.
async function grpcCall(path, inSchema, request, outSchema, onMessage, opts = {}) {
  const headers = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "x-user-agent": "slotd-pages/1" };
  if (opts.token) headers["x-admission-token"] = opts.token;
  let response;
  try {
    response = await fetch("/slotd.v1." + path, {
      method: "POST", headers, body: frame(Proto.encode(inSchema, request)), signal: opts.signal,
    });
  } catch (e) {
    throw new GrpcError(14, "network: " + e.message);
  }
  if (!response.ok) throw new GrpcError(14, "HTTP " + response.status);
  const early = response.headers.get("grpc-status");
  if (early !== null) {
    const err = statusFrom((k) => response.headers.get(k));
    if (err) throw err;
    return;
  }
  const reader = response.body.getReader();
  let buf = new Uint8Array(0);
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      throw new GrpcError(1, "stream interrupted: " + e.message);
    }
    if (chunk.done) throw new GrpcError(2, "the call ended without a status");
    const joined = new Uint8Array(buf.length + chunk.value.length);
    joined.set(buf);
    joined.set(chunk.value, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const len = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + len) break;
      const flags = buf[0];
      const payload = buf.slice(5, 5 + len);
      buf = buf.slice(5 + len);
      if (flags & 0x80) {
        const t = trailerMap(payload);
        const err = statusFrom((k) => t[k]);
        if (err) throw err;
        return;
      }
      onMessage(Proto.decode(outSchema, payload));
    }
  }
}

async function grpcUnary(path, inSchema, request, outSchema, opts) {
  let reply = null;
  await grpcCall(path, inSchema, request, outSchema, (m) => (reply = m), opts);
  if (!reply) throw new GrpcError(2, "no reply");
  return reply;
}
