// The receiver's debugger page. No framework and no build step.
// Every value that came from a client is set with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : "";
}

function compact(value, max = 160) {
  const text = JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > max ? text.slice(0, max) + "…" : text;
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// A list row: one summary line of [class, text] cells; a click shows or hides details().
function row(cells, details) {
  const li = el("li", "row");
  const line = el("div", "line");
  for (const [className, text] of cells) line.append(el("span", className, text));
  li.append(line);
  if (details) {
    line.addEventListener("click", () => {
      const open = li.querySelector(":scope > pre");
      if (open) open.remove();
      else li.append(el("pre", "json", details()));
    });
  }
  return li;
}

function prepend(list, item) {
  list.prepend(item);
  while (list.children.length > MAX_ROWS) list.lastElementChild.remove();
}

function who(item) {
  if (item.userId) return item.userId;
  if (item.anonymousId) return "anonymous " + item.anonymousId;
  return "";
}

// What each type carries, in short: identify its traits; track its event name and
// properties; group its groupId and traits; alias its previousId; page and screen
// their name and properties. Names and ids are shown as plain text.
function summary(type, event) {
  const text = (value) => (typeof value === "string" ? value : compact(value));
  const props = (value) =>
    value && typeof value === "object" && Object.keys(value).length ? compact(value) : "";
  const join = (...parts) => parts.filter((part) => part !== "" && part !== undefined).join(" ");
  switch (type) {
    case "track":
      return join(text(event.event), props(event.properties));
    case "group":
      return join(text(event.groupId), props(event.traits));
    case "alias":
      return join("previousId", text(event.previousId));
    case "page":
    case "screen":
      return join(text(event.category), text(event.name), props(event.properties));
    default:
      return event.traits === undefined ? "" : compact(event.traits);
  }
}

function eventRow(item) {
  // A single-event call may carry its write key in the event itself.
  if (item.event && "writeKey" in item.event) item.event.writeKey = "(hidden)";
  const li = row(
    [
      ["type", item.type],
      ["who", who(item)],
      ["mid", item.messageId ?? ""],
      ["at", time(item.at_ms)],
      ["traits", summary(item.type, item.event)],
    ],
    () => pretty(item.event),
  );
  li.dataset.seq = item.seq;
  if (item.duplicate) li.querySelector(".line").prepend(el("span", "tag duplicate", "duplicate"));
  return li;
}

function problemRow(item) {
  const label = item.kind === "dropped" ? "dropped (200)" : item.kind;
  const count = item.count > 1 ? `${item.count} events: ` : "";
  const li = row(
    [
      ["tag " + item.kind, label],
      ["meta", item.code],
      ["detail-text", count + item.detail],
      ["meta", "request #" + item.request],
      ["at", time(item.at_ms)],
    ],
    () => {
      const lines = [];
      if (item.userId) lines.push("userId: " + item.userId);
      if (item.messageIds.length) lines.push("messageIds: " + item.messageIds.join(", "));
      if (item.excerpt) lines.push("event: " + item.excerpt);
      lines.push("(see request #" + item.request + " under Requests)");
      return lines.join("\n");
    },
  );
  li.dataset.kind = item.kind;
  li.dataset.code = item.code;
  return li;
}

function requestRow(item) {
  const bad = item.status >= 400 || item.status === 0;
  const li = row([
    ["meta", "#" + item.id],
    ["path", item.path],
    ["status-code" + (bad ? " bad" : ""), item.status || "held"],
    ["meta", `${item.events} events`],
    ["meta", `${item.wire_bytes} B on the wire` + (item.gzip ? ` (gzip, ${item.body_bytes} B)` : "")],
    ["meta", item.retry_count ? `retry ${item.retry_count}` : ""],
    ["detail-text", item.error ? `${item.error}: ${item.error_message ?? ""}` : ""],
    ["at", time(item.received_ms)],
  ]);
  li.querySelector(".line").addEventListener("click", () => showRequest(item.id));
  return li;
}

function table(entries) {
  const body = el("table");
  for (const [name, value] of entries) {
    const tr = el("tr");
    tr.append(el("td", "", name), el("td", "", typeof value === "string" ? value : compact(value, 2000)));
    body.append(tr);
  }
  return body;
}

async function getJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${response.status} from ${url}`);
  return response.json();
}

async function showRequest(id) {
  const box = $("request");
  box.replaceChildren(el("p", "empty", "loading…"));
  try {
    const found = await getJson("/_receiver/request?id=" + encodeURIComponent(id));
    const request = found.request;
    box.replaceChildren(
      el("h2", "", `Request #${request.id}: ${request.path} → ${request.status || "held"}`),
      el("h3", "", "Headers"),
      table(found.headers),
      el("h3", "", request.gzip ? "Body (gunzipped)" : "Body"),
      el("pre", "json", found.body ?? "(no longer kept: bodies are let go first to bound memory)"),
    );
  } catch (error) {
    box.replaceChildren(el("p", "empty", String(error)));
  }
}

async function searchCustomers() {
  const list = $("customers");
  const query = $("customer-query").value;
  const found = await getJson("/_receiver/customers?q=" + encodeURIComponent(query));
  list.replaceChildren();
  if (!found.length) list.append(el("li", "empty", "no customer matches"));
  for (const customer of found) {
    const li = row([
      ["who", (customer.anonymous ? "anonymous " : "") + customer.id],
      ["meta", customer.email ?? ""],
      ["meta", `${customer.events} events`],
    ]);
    li.querySelector(".line").addEventListener("click", () => showCustomer(customer.id));
    list.append(li);
  }
  if (found.length === 1) showCustomer(found[0].id);
}

async function showCustomer(id) {
  const box = $("customer");
  try {
    const found = await getJson("/_receiver/customer?id=" + encodeURIComponent(id));
    const profile = found.profile;
    const events = el("ol", "list customer-events");
    for (const item of found.events.slice().reverse()) events.append(eventRow(item));
    box.replaceChildren(
      el("h2", "", (profile.anonymous ? "anonymous " : "") + profile.id),
      el("p", "hint", `${profile.events} events; profile as Segment would hold it: traits merged in arrival order, null removes a trait.`),
      table(Object.entries(profile.traits)),
    );
    box.querySelector("table").id = "profile-traits";
    if (profile.truncated) box.append(el("p", "hint", "Some traits were not merged: the profile reached its size limit."));
    box.append(el("h3", "", `Events that built it (newest first, ${found.events.length} kept)`), events);
  } catch (error) {
    box.replaceChildren(el("p", "empty", String(error)));
  }
}

function setCounts(stats) {
  $("count-requests").textContent = stats.requests;
  $("count-events").textContent = stats.accepted;
  $("count-customers").textContent = stats.customers;
  $("count-duplicates").textContent = stats.duplicates;
  $("count-refused").textContent = stats.refused_requests;
  $("count-dropped").textContent = stats.rejected;
  const problems = stats.refused_requests + stats.rejected + stats.duplicates;
  $("problem-badge").hidden = problems === 0;
  $("problem-badge").textContent = problems;
}

function clearLists() {
  for (const id of ["events", "problems", "requests"]) $(id).replaceChildren();
}

function apply(update) {
  if (update.reset) clearLists();
  $("keep").textContent = update.keep;
  $("dedup-window").textContent = update.dedup_window;
  setCounts(update.stats);
  // Each list arrives oldest first; prepending keeps the newest on top.
  for (const item of update.events) prepend($("events"), eventRow(item));
  for (const item of update.problems) prepend($("problems"), problemRow(item));
  for (const item of update.requests) prepend($("requests"), requestRow(item));
}

function showTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const section of document.querySelectorAll(".tab")) {
    section.hidden = section.id !== "tab-" + name;
  }
  if (name === "customers") searchCustomers();
}

function connect() {
  const status = $("status");
  const source = new EventSource("/_receiver/live");
  // The first update after (re)connecting holds everything kept, so start from empty.
  source.addEventListener("open", () => {
    clearLists();
    status.textContent = "live";
    status.className = "status live";
  });
  source.addEventListener("error", () => {
    status.textContent = "disconnected, retrying…";
    status.className = "status";
  });
  source.addEventListener("update", (message) => apply(JSON.parse(message.data)));
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("nav button")) {
    button.addEventListener("click", () => showTab(button.dataset.tab));
  }
  $("customer-search").addEventListener("submit", (event) => {
    event.preventDefault();
    searchCustomers();
  });
  connect();
});
