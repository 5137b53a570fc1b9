// Razorpay's checkout widget for one order (the page's #razorpay data attributes). Its success handler gets
// three fields; they go to Pockity in a form POST, where the signature is verified with the key secret.
(function () {
  "use strict";
  function start() {
    var data = document.getElementById("razorpay");
    var form = document.getElementById("razorpay-proof");
    var status = document.getElementById("rzp-status");
    var button = document.getElementById("razorpay-open");
    if (!data || !form || !button) return;
    if (typeof window.Razorpay !== "function") {
      status.textContent = "Razorpay's checkout could not be loaded. Check your connection and reload the page.";
      button.disabled = true;
      return;
    }
    var d = data.dataset;
    var checkout = new window.Razorpay({
      key: d.key,
      order_id: d.order,
      amount: Number(d.amount),
      currency: d.currency,
      name: "Pockity",
      description: d.description,
      prefill: { name: d.name, email: d.email },
      handler: function (proof) {
        form.elements.razorpay_order_id.value = proof.razorpay_order_id || "";
        form.elements.razorpay_payment_id.value = proof.razorpay_payment_id || "";
        form.elements.razorpay_signature.value = proof.razorpay_signature || "";
        status.textContent = "Payment received by Razorpay; confirming it with Pockity…";
        form.submit();
      },
      modal: {
        ondismiss: function () { status.textContent = "The Razorpay window was closed; nothing was charged."; }
      }
    });
    button.addEventListener("click", function () { checkout.open(); });
    checkout.open();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
