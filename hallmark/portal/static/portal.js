// Hallmark portal: copy buttons (the only script; pages work without it, the field is selectable).
document.addEventListener("click", function (ev) {
  var btn = ev.target.closest ? ev.target.closest("button.copy") : null;
  if (!btn) return;
  var field = document.getElementById(btn.getAttribute("data-copy"));
  if (!field) return;
  field.select();
  var done = function () { btn.textContent = "Copied"; setTimeout(function () { btn.textContent = "Copy"; }, 1500); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, function () { document.execCommand("copy"); done(); });
  } else {
    document.execCommand("copy");
    done();
  }
});
document.addEventListener("focusin", function (ev) {
  if (ev.target.classList && ev.target.classList.contains("pull-command")) ev.target.select();
});
