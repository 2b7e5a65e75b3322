#!/bin/sh
# Train Segmenter-ViT-S/16 on ade20k with PIR-AT's recipe (config/ade20k/ade20k_segmenter_vit_s_pirat.yaml):
# sh tool_train/ade20k/segmenter_vit_s_train_pirat.sh [key value ...]
exec sh tool_train/train.sh ade20k segmenter_vit_s_pirat config/ade20k/ade20k_segmenter_vit_s_pirat.yaml "$@"
