// The public API, called with the user's key like any client.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let apiKey = "";

export function setKey(key) {
  apiKey = key;
}

function headers(json) {
  const h = {};
  if (apiKey) h.Authorization = `Bearer ${apiKey}`;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

async function send(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message}); is it running?`);
  }
  if (!response.ok) throw await failure(response);
  return response;
}

export async function getJson(path) {
  return (await send(path, { headers: headers(false) })).json();
}

export async function postJson(path, body) {
  return (await send(path, { method: "POST", headers: headers(true), body: JSON.stringify(body) })).json();
}

// POST a streaming request; `onEvent(obj)` for each SSE `data:` payload until [DONE].
export async function stream(path, body, onEvent, signal) {
  const response = await send(path, { method: "POST", headers: headers(true), body: JSON.stringify(body), signal });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        const payload = JSON.parse(data);
        if (payload.error) throw new ApiError(0, payload.error.message);
        onEvent(payload);
      }
    }
  }
}
