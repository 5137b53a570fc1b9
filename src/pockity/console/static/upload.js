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
