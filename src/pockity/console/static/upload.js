// Pockity's upload module: drag-and-drop or pick files; each is sent by XHR with its own progress bar, speed,
// time left and a cancel button. Errors are the server's plain sentence (Accept: text/plain).
(function () {
  "use strict";
  var zone = document.getElementById("uploader");
  if (!zone) return;
  var form = document.getElementById("upload-form");
  var input = document.getElementById("upload-input");
  var list = document.getElementById("uploads");
  var folder = zone.dataset.folder || "";
  var directMin = parseInt(zone.dataset.directMin || "0", 10);  // from this size on: straight to storage, in parts
  var running = 0;

  function human(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  function row(file) {
    var li = document.createElement("li");
    li.className = "upload";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = file.size || 1;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    var status = document.createElement("span");
    status.className = "status muted";
    status.textContent = "Waiting…";
    var cancel = document.createElement("button");
    cancel.type = "button";
    cancel.textContent = "Cancel";
    li.append(name, bar, status, cancel);
    list.append(li);
    return { li: li, bar: bar, status: status, cancel: cancel };
  }

  function send(file) {
    if (directMin > 0 && file.size >= directMin) { sendDirect(file); return; }
    var ui = row(file);
    var xhr = new XMLHttpRequest();
    var started = Date.now();
    running++;
    ui.cancel.addEventListener("click", function () { xhr.abort(); });
    xhr.upload.addEventListener("progress", function (e) {
      if (!e.lengthComputable) return;
      ui.bar.max = e.total;
      ui.bar.value = e.loaded;
      var seconds = (Date.now() - started) / 1000;
      var speed = seconds > 0 ? e.loaded / seconds : 0;
      var left = speed > 0 ? Math.ceil((e.total - e.loaded) / speed) : 0;
      ui.status.textContent = Math.floor(100 * e.loaded / e.total) + " % · " + human(speed) + "/s · " + left + " s left";
    });
    function finish(state, message) {
      running--;
      ui.li.dataset.state = state;
      ui.status.textContent = message;
      ui.cancel.remove();
      if (state === "done") ui.bar.value = ui.bar.max;
      if (running === 0) refresh();
    }
    xhr.addEventListener("load", function () {
      if (xhr.status === 201) finish("done", "Uploaded");
      else finish("failed", xhr.responseText || "The upload failed.");
    });
    xhr.addEventListener("error", function () { finish("failed", "The connection failed."); });
    xhr.addEventListener("abort", function () { finish("cancelled", "Cancelled"); });
    var body = new FormData();
    body.append("file", file, file.name);
    xhr.open("POST", "/files/upload?name=" + encodeURIComponent(folder + file.name));
    xhr.setRequestHeader("X-CSRF-Token", window.pockityCsrf());
    xhr.setRequestHeader("Accept", "text/plain");
    xhr.send(body);
  }

  // Large files: the server reserves the size (a quota refusal arrives before any byte is sent) and presigns one
  // PUT per part; the parts go straight to storage, two at a time, and the server then assembles them.
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": window.pockityCsrf(), "Accept": "text/plain" },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    }).then(function (r) {
      if (r.ok) return r;
      return r.text().then(function (t) { throw new Error(t || "The upload failed."); });
    });
  }

  function sendDirect(file) {
    var ui = row(file);
    var started = Date.now();
    var loaded = {};  // bytes sent per part
    var live = [];
    var cancelled = false;
    var uploadId = null;
    running++;
    ui.bar.max = file.size || 1;
    function total() { var n = 0; for (var k in loaded) n += loaded[k]; return n; }
    function progress() {
      var done = total(), seconds = (Date.now() - started) / 1000;
      var speed = seconds > 0 ? done / seconds : 0;
      var left = speed > 0 ? Math.ceil((file.size - done) / speed) : 0;
      ui.bar.value = done;
      ui.status.textContent = Math.floor(100 * done / (file.size || 1)) + " % · " + human(speed) + "/s · " + left + " s left";
    }
    function finish(state, message) {
      running--;
      ui.li.dataset.state = state;
      ui.status.textContent = message;
      ui.cancel.remove();
      if (state === "done") ui.bar.value = ui.bar.max;
      if (running === 0) refresh();
    }
    ui.cancel.addEventListener("click", function () {
      cancelled = true;
      live.forEach(function (x) { x.abort(); });
      if (uploadId) post("/files/direct/" + uploadId + "/cancel").catch(function () {});
    });
    function putPart(part) {
      return new Promise(function (resolve, reject) {
        var xhr = new XMLHttpRequest();
        live.push(xhr);
        var start = (part.partNumber - 1) * partSize;
        xhr.upload.addEventListener("progress", function (e) { loaded[part.partNumber] = e.loaded; progress(); });
        xhr.addEventListener("load", function () {
          var etag = xhr.getResponseHeader("ETag");
          if (xhr.status >= 200 && xhr.status < 300 && etag) {
            loaded[part.partNumber] = part.size;
            progress();
            resolve({ partNumber: part.partNumber, etag: etag });
          } else reject(new Error("A part of the file was refused (" + xhr.status + ")."));
        });
        xhr.addEventListener("error", function () { reject(new Error("The connection failed.")); });
        xhr.addEventListener("abort", function () { reject(new Error("Cancelled")); });
        xhr.open("PUT", part.url);
        xhr.send(file.slice(start, start + part.size));
      });
    }
    var partSize = 0;
    ui.status.textContent = "Reserving space…";
    post("/files/direct", { name: folder + file.name, size: file.size, contentType: file.type || null })
      .then(function (r) { return r.json(); })
      .then(function (plan) {
        uploadId = plan.uploadId;
        partSize = plan.parts.length ? plan.parts[0].size : 0;
        if (cancelled) throw new Error("Cancelled");
        var queue = plan.parts.slice(), done = [];
        function next() {
          var part = queue.shift();
          if (!part || cancelled) return Promise.resolve();
          return putPart(part).then(function (d) { done.push(d); return next(); });
        }
        return Promise.all([next(), next()]).then(function () {
          if (cancelled) throw new Error("Cancelled");
          done.sort(function (a, b) { return a.partNumber - b.partNumber; });
          return post("/files/direct/" + uploadId + "/complete", { parts: done });
        });
      })
      .then(function () { finish("done", "Uploaded"); })
      .catch(function (err) {
        if (cancelled) { finish("cancelled", "Cancelled"); return; }
        live.forEach(function (x) { x.abort(); });
        if (uploadId) post("/files/direct/" + uploadId + "/cancel").catch(function () {});
        finish("failed", err.message || "The upload failed.");
      });
  }

  function refresh() {  // the listing with the new files, swapped in place
    if (window.htmx) window.htmx.ajax("GET", window.location.href, { target: "#listing", select: "#listing", swap: "outerHTML" });
  }

  function sendAll(files) { Array.prototype.forEach.call(files, send); }

  input.addEventListener("change", function () { sendAll(input.files); input.value = ""; });
  form.addEventListener("submit", function (e) { e.preventDefault(); sendAll(input.files); });
  ["dragenter", "dragover"].forEach(function (type) {
    zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (type) {
    zone.addEventListener(type, function () { zone.classList.remove("over"); });
  });
  zone.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) sendAll(e.dataTransfer.files);
  });
})();
