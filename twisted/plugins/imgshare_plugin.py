from twisted.application.service import ServiceMaker

imgshare = ServiceMaker(
    "IMGSHARE", "imgshare.tap", "A self-hosted image host (uploads, streamed originals, resized copies).", "imgshare"
)
