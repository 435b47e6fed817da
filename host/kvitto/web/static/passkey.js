// Passkeys (WebAuthn) for enrolment and at the door: the page carries the server's options as
// JSON in <script type="application/json" id="webauthn-options">; the button runs the ceremony
// and posts the credential, as JSON, in the form's hidden field. Without this script (or
// without WebAuthn) the page says so: a passkey cannot be made or used without it.
(function () {
  "use strict";
  var data = document.getElementById("webauthn-options");
  var form = document.getElementById("passkey-form");
  var status = document.getElementById("passkey-status");
  if (!data || !form) { return; }
  var button = form.querySelector("button");
  function bytes(text) {
    var base = text.replace(/-/g, "+").replace(/_/g, "/");
    while (base.length % 4) { base += "="; }
    var raw = atob(base), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }
  function text(buffer) {
    var raw = "", view = new Uint8Array(buffer);
    for (var i = 0; i < view.length; i++) { raw += String.fromCharCode(view[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  if (!window.PublicKeyCredential) {
    status.textContent = status.dataset.unsupported;
    button.disabled = true;
    return;
  }
  button.disabled = false;
  var options = JSON.parse(data.textContent);
  var creating = form.dataset.ceremony === "create";
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    status.textContent = status.dataset.waiting;
    options.challenge = bytes(options.challenge);
    var request;
    if (creating) {
      options.user.id = bytes(options.user.id);
      (options.excludeCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
      request = navigator.credentials.create({ publicKey: options });
    } else {
      (options.allowCredentials || []).forEach(function (c) { c.id = bytes(c.id); });
      request = navigator.credentials.get({ publicKey: options });
    }
    request.then(function (credential) {
      var response = credential.response, json = {
        id: credential.id, rawId: text(credential.rawId), type: credential.type,
        clientExtensionResults: {}, response: { clientDataJSON: text(response.clientDataJSON) }
      };
      if (creating) {
        json.response.attestationObject = text(response.attestationObject);
        json.response.transports = response.getTransports ? response.getTransports() : [];
      } else {
        json.response.authenticatorData = text(response.authenticatorData);
        json.response.signature = text(response.signature);
        if (response.userHandle) { json.response.userHandle = text(response.userHandle); }
      }
      form.elements.credential.value = JSON.stringify(json);
      form.submit();
    }, function () {
      options.challenge = text(options.challenge);
      if (creating) { options.user.id = text(options.user.id); }
      status.textContent = status.dataset.failed;
    });
  });
})();
